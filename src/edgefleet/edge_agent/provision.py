"""Install a device bundle from ``fleet device add --out DIR``: ``fleet-agent provision DIR``.

A bundle holds ``agent.toml`` (no secrets; paths relative to the bundle), ``credentials.json``
(0600), ``director-root.json``, ``image-root.json`` and, with TLS, ``fleet-ca.pem``.
Installing it checks everything first (the config loads, the files are there, nothing is
provisioned yet unless ``force``), then copies roots and CA into the data directory,
stores the credentials in ``data_dir/identity`` (0600), provisions the TUF trust store,
makes the report key and writes ``data_dir/agent.toml`` with absolute paths to the
installed copies. The bundle may then be deleted; the agent needs no hand edits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..atomicio import atomic_write
from .config import AgentConfig, load_config, write_config
from .errors import ConfigError

ROOT_FILES = ("director-root.json", "image-root.json")
CA_FILE = "fleet-ca.pem"
CREDENTIALS = "credentials.json"


@dataclass
class Installed:
    config_path: Path
    data_dir: Path
    lines: list[str] = field(default_factory=list)  # what to tell the operator


def _check_bundle(bundle: Path) -> Path:
    if not bundle.is_dir():
        raise ConfigError(f"{bundle}: not a directory (give the directory `fleet device add --out` wrote)")
    missing = [name for name in ("agent.toml", CREDENTIALS, *ROOT_FILES) if not (bundle / name).is_file()]
    if missing:
        raise ConfigError(f"bundle {bundle} lacks {', '.join(missing)}: write it again with `fleet device add ID --out DIR`")
    return bundle / "agent.toml"


def install_bundle(bundle: Path, *, data_dir: Path | None = None, config_out: Path | None = None,
                   force: bool = False, env: dict[str, str] | None = None) -> Installed:
    """Install ``bundle`` on this device.

    Raises:
        ConfigError: the bundle is incomplete or invalid, the data directory cannot be written,
            or the device is already provisioned (without ``force``).
    """
    from ..registry.tuf import TufError
    from ..registry.tuf import provision as tuf_provision
    from .identity import IdentityStore, provision_credentials
    from .report_signer import KEY_FILE, ensure_key

    bundle = bundle.resolve()
    cfg = load_config(_check_bundle(bundle), env=env)
    if data_dir is not None:
        cfg = cfg.model_copy(update={"agent": cfg.agent.model_copy(update={"data_dir": data_dir.resolve()})})
    home = Path(cfg.agent.data_dir).expanduser()
    config_path = (config_out or home / "agent.toml").resolve()
    if not force:
        if IdentityStore(home).load() is not None or (home / "trust" / "trusted" / "director-root.json").exists():
            raise ConfigError(f"device {cfg.device_id} is already provisioned in {home}; use --force to replace it")
        if config_path.exists():
            raise ConfigError(f"{config_path} exists; use --force to replace it (or --write-config PATH)")
    try:
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        roots = home / "roots"
        roots.mkdir(exist_ok=True)
        for name in ROOT_FILES:
            atomic_write(roots / name, (bundle / name).read_bytes(), mode=0o644)
        ca = None
        if (bundle / CA_FILE).is_file():
            ca = home / CA_FILE
            atomic_write(ca, (bundle / CA_FILE).read_bytes(), mode=0o644)
    except PermissionError as exc:
        raise ConfigError(f"cannot write the agent's data directory {home}: {exc.strerror}; run as the agent's "
                          "user (root for /var/lib/edgefleet) or pass --data-dir DIR") from None
    except OSError as exc:
        raise ConfigError(f"cannot install the bundle into {home}: {exc}") from None
    try:
        tuf_provision(home / "trust", director_root=(roots / ROOT_FILES[0]).read_bytes(),
                      image_root=(roots / ROOT_FILES[1]).read_bytes(), overwrite=force)
    except TufError as exc:
        raise ConfigError(f"trusted roots in {bundle}: {exc}") from None
    provision_credentials(home, bundle / CREDENTIALS, device_id=cfg.device_id, overwrite=force)
    installed = _installed_config(cfg, bundle, home, roots, ca)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_config(installed, config_path)
    os.chmod(config_path, 0o600)
    load_config(config_path, env={})  # what was written loads as it is
    public_key, created = ensure_key(home)
    return Installed(config_path, home, [
        f"device {cfg.device_id} provisioned in {home}: trusted roots, "
        + ("fleet CA, " if ca else "") + f"credentials (0600) in {home / 'identity'}",
        f"agent config: {config_path} (controller {cfg.agent.controller_url}, broker {cfg.mqtt.host}:{cfg.mqtt.port}, "
        f"MQTT {cfg.mqtt.protocol}{', TLS' if cfg.mqtt.tls else ''})",
        f"report key {'made' if created else 'already'} in {home / 'identity' / KEY_FILE}; public key: {public_key}",
        f"start the agent: fleet-agent run --config {config_path}   (you may now delete {bundle})",
    ])


def _installed_config(cfg: AgentConfig, bundle: Path, home: Path, roots: Path, ca: Path | None) -> AgentConfig:
    """The bundle's config with every path into the bundle pointed at the installed copy."""

    def moved(path: Path | None) -> Path | None:
        if path is None:
            return None
        p = Path(path)
        if p == bundle / CA_FILE and ca is not None:
            return ca
        if p == bundle:
            return roots
        return p

    agent = cfg.agent.model_copy(update={"data_dir": home, "trust_roots": moved(cfg.agent.trust_roots) or roots,
                                         "ca_file": moved(cfg.agent.ca_file)})
    mqtt = cfg.mqtt.model_copy(update={"ca_file": moved(cfg.mqtt.ca_file), "password": None})
    return cfg.model_copy(update={"agent": agent.model_copy(update={"token": ""}), "mqtt": mqtt})
