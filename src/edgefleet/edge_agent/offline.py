"""``fleet-agent install-offline``: install an offline bundle with no network at all.

The bundle (``fleet bundle export``) holds the same TUF files the device fetches online
(``registry/tuf/offline.py``). It is read through ``DirFetcher`` by the device's own
``DeviceVerifier`` and installed by the same ``Updater`` as an online update, so every
check is the online one: signatures from the trusted roots in ``<data_dir>/trust``, expiry
against ``max(clock, last trusted time)``, release counters per slot, device and
hardware id, length and hashes of each bundle, unpack, self-test, A/B switch. A refusal
carries the online error code (``E_HASH_MISMATCH``, ``E_EXPIRED``, ``E_WRONG_DEVICE`` …)
and leaves the slots and the agent's state as they were.

What was installed is recorded in the agent's state file (and the slot's release floor in
``trust.json``), so when the agent runs again and reconnects its signed ``reported`` names
the installed model. Run it while the agent daemon is stopped (it owns the same state).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..protocols import SLOTS, Desired, DeviceSettings
from ..registry.tuf import DeviceVerifier, TufError, provision
from ..registry.tuf.offline import DirFetcher, extract_tar, read_manifest, urls
from .config import AgentConfig
from .errors import OfflineRefused
from .state import StateStore
from .updater import Updater, _signed_settings

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Slots:
    """Where the updater puts the loaded runners: no frames flow during an offline install."""

    def __init__(self) -> None:
        self.control: Any = None
        self.shadow: Any = None

    def close(self) -> None:
        for runner in (self.control, self.shadow):
            if runner is not None:
                runner.close()


@dataclass
class OfflineResult:
    device_id: str
    director_version: int
    installed: dict[str, str] = field(default_factory=dict)  # slot → name:version now running
    changed: list[str] = field(default_factory=list)  # slots switched by this install
    manifest: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"device {self.device_id}: offline bundle verified (director metadata v{self.director_version})"]
        for slot in SLOTS:
            if slot in self.installed:
                what = "installed" if slot in self.changed else "already installed"
                out.append(f"  {slot}: {self.installed[slot]} ({what})")
        out.append("the agent reports it to the controller when it next connects")
        return out


def _verifier(config: AgentConfig, hardware_id: str, root: Path, clock: Callable[[], datetime]) -> DeviceVerifier:
    trust_dir = config.agent.data_dir / "trust"
    roots = config.agent.trust_roots
    if roots is not None and not (trust_dir / "trusted" / "director-root.json").exists():
        try:
            provision(trust_dir, director_root=(roots / "director-root.json").read_bytes(),
                      image_root=(roots / "image-root.json").read_bytes())
        except OSError as exc:
            raise OfflineRefused(f"cannot read trusted roots in {roots}: {exc}", code="E_NOT_PROVISIONED") from None
    director, image, targets = urls()
    return DeviceVerifier(config.agent.device_id, hardware_id, trust_dir, director, image, targets,
                          fetcher=DirFetcher(root), clock=clock)  # type: ignore[arg-type]


def install_offline(config: AgentConfig, bundle: Path, *, hardware_id: str | None = None,
                    clock: Callable[[], datetime] = _utcnow) -> OfflineResult:
    """Verify ``bundle`` (a directory or a ``.tar``) with this device's trust and install it.

    Args:
        hardware_id: this device's hardware id (default: detected, as the daemon does).
        clock: wall clock (UTC), for tests.

    Raises:
        OfflineRefused: with the code of the online refusal; nothing was installed.
    """
    data_dir = config.agent.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    scratch: Path | None = None
    try:
        root = Path(bundle)
        if root.is_file():
            scratch = Path(tempfile.mkdtemp(dir=data_dir, prefix=".offline-"))
            root = extract_tar(root, scratch / "bundle")
        elif not root.is_dir():
            raise OfflineRefused(f"{bundle}: no such offline bundle (a directory or a .tar)", code="E_OFFLINE")
        return _install(config, root, hardware_id, clock)
    except TufError as exc:
        raise OfflineRefused(str(exc), code=exc.code) from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _install(config: AgentConfig, root: Path, hardware_id: str | None, clock: Callable[[], datetime]) -> OfflineResult:
    manifest = read_manifest(root)
    if hardware_id is None:
        from .daemon import detect_device

        _, hardware_id = detect_device(config.agent.hardware_id)
    device_id = config.agent.device_id
    verifier = _verifier(config, hardware_id, root, clock)
    # what the bundle's signed metadata says (exactly the online check); it becomes the
    # "hint" for the updater, which checks again and installs
    result = verifier.check()
    settings = _signed_settings(result) or DeviceSettings()
    desired = Desired(device_id=device_id, generation=result.generation or 0,
                      director_version=result.director_version, credentials_epoch=result.credentials_epoch or 0,
                      settings=settings)
    store = StateStore(config.agent.data_dir)
    state = store.load()
    before = state.model_copy(deep=True)
    slots = _Slots()
    updater = Updater(device_id=device_id, data_dir=config.agent.data_dir, state=state, store=store,
                      pipeline=slots, report=lambda: None, threads=config.inference.threads,  # type: ignore[arg-type]
                      verifier=verifier)
    try:
        updater.restore()  # what runs now, so an unchanged slot stays as it is
        previous = {slot: s.installed.digest if s.installed else None for slot, s in state.slots.items()}
        updater.apply(desired)
        blocked = updater.update_blocked
        if blocked is not None:
            store.save(before)  # an offline refusal must not mark the release failed for the online path
            raise OfflineRefused(blocked.reason, code=blocked.code)
    finally:
        slots.close()
    out = OfflineResult(device_id, result.director_version, manifest=manifest)
    for slot, s in state.slots.items():
        if s.installed is not None:
            out.installed[slot] = s.installed.label
            if previous.get(slot) != s.installed.digest:
                out.changed.append(slot)
    log.info("device %s: offline bundle installed: %s", device_id, out.installed)
    return out


def install_offline_cmd(
    bundle: Annotated[Path, typer.Argument(help="offline bundle from `fleet bundle export`: a directory or a .tar",
                                           show_default=False)],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="agent TOML file")] = None,  # noqa: UP045
) -> None:
    """Verify an offline bundle with this device's trusted roots (no network) and install it.

    The same checks as an online update: signatures, expiry against the last trusted time,
    release counters, device and hardware id, hashes, self-test. Stop the agent first
    (`systemctl stop edgefleet-agent`); it reports the installed model when it reconnects.
    """
    from .config import load_config
    from .errors import AgentError

    try:
        cfg = load_config(config)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = install_offline(cfg, bundle)
    except OfflineRefused as exc:
        typer.echo(f"error: {exc.code}: refused, nothing installed: {exc}", err=True)
        raise typer.Exit(1) from None
    for line in result.lines():
        typer.echo(line)
