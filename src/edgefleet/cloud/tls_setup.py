"""TLS for ``fleet cloud init|serve``: the fleet CA and server certificate, and what ``serve`` may bind.

``init_tls`` creates the CA in ``<data_dir>/pki`` (once) and a server certificate for the
given names; ``write_tls_settings`` records the files in ``controller.toml``.
``http_ssl_options`` decides how the API is served: HTTPS when a certificate is
configured; plain HTTP only on a loopback address, or with ``--insecure-http`` — which
still refuses a non-loopback bind unless forced — and always with a WARNING that tokens
cross in clear. ``embedded_broker`` builds the broker ``--embedded-broker`` runs: TLS on
``mqtt_tls_port`` when the CA exists, plain MQTT only on loopback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bridge import is_loopback
from .broker import Broker, BrokerTls, EmbeddedBroker, MosquittoBroker
from .errors import ConfigError
from .pki import FleetCA
from .settings import CloudSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

PKI_DIR = "pki"


def default_tls_names() -> list[str]:
    """localhost, 127.0.0.1, ::1 and this host's name (and its FQDN when it has one)."""
    names = ["localhost", "127.0.0.1", "::1"]
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names:
            names.append(name)
    return names


def split_names(names: list[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of ``--tls-name`` values."""
    dns, ips = [], []
    for name in names:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return dns, ips


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path
    created_ca: bool


def init_tls(data_dir: Path, names: list[str]) -> TlsFiles:
    """The fleet CA (created if absent, never replaced) and a new server certificate for ``names``."""
    pki_dir = data_dir / PKI_DIR
    created = not FleetCA.exists(pki_dir)
    ca = FleetCA.create(pki_dir) if created else FleetCA.open(pki_dir)
    dns, ips = split_names(names)
    cert, key = ca.issue_server_cert(dns, ips)
    return TlsFiles(ca.ca_file, cert, key, created)


def write_tls_settings(config_file: Path, files: TlsFiles) -> bool:
    """Add the TLS keys to ``[controller]`` of ``controller.toml`` unless it sets them already.

    Returns whether the file changed. Lines the operator wrote are kept as they are.
    """
    text = config_file.read_text() if config_file.exists() else ""
    current = tomllib.loads(text).get("controller", {}) if text else {}
    wanted = {
        "tls_cert_file": str(files.cert_file), "tls_key_file": str(files.key_file),
        "tls_ca_file": str(files.ca_file), "mqtt_tls": True, "mqtt_ca_file": str(files.ca_file),
    }
    missing = {k: v for k, v in wanted.items() if k not in current}
    if not missing:
        return False
    lines = [f"{k} = {'true' if v is True else json.dumps(v)}" for k, v in missing.items()]
    block = "# TLS (docs/tls.md): the fleet CA in pki/ signed this certificate\n" + "\n".join(lines) + "\n"
    if "[controller]" in text.splitlines():
        head, _, tail = text.partition("[controller]\n")
        text = f"{head}[controller]\n{block}{tail}"
    else:
        text = f"[controller]\n{block}\n{text}"
    config_file.write_text(text)
    tomllib.loads(text)  # still valid TOML
    return True


def http_ssl_options(settings: CloudSettings, *, insecure_http: bool = False, force: bool = False) -> dict[str, Any]:
    """uvicorn's ``ssl_certfile``/``ssl_keyfile``, or {} for plain HTTP where that is allowed.

    Raises:
        ConfigError: no certificate (or ``--insecure-http``) on a non-loopback bind without
            ``force``, or a configured certificate file that is missing.
    """
    host = settings.http_host
    if settings.tls_cert_file and not insecure_http:
        for path in (settings.tls_cert_file, settings.tls_key_file):
            if path is None or not Path(path).is_file():
                raise ConfigError(f"TLS certificate or key missing: {path} (tls_cert_file/tls_key_file in controller.toml)")
        return {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}
    if not is_loopback(host):
        if not (insecure_http and force):
            why = "--insecure-http" if insecure_http else "no TLS certificate is configured (tls_cert_file)"
            raise ConfigError(
                f"refusing plain HTTP on {host}: {why}, and device and API tokens would cross the network in clear. "
                "Run `fleet cloud init` (fleet CA + certificate), set tls_cert_file/tls_key_file, "
                "bind to 127.0.0.1 behind a TLS proxy, or pass --insecure-http --force")
        log.warning("SERVING PLAIN HTTP ON %s:%d (--insecure-http --force): device and API tokens cross the "
                    "network in clear", host, settings.http_port)
        return {}
    log.warning("serving plain HTTP on loopback %s:%d: tokens cross in clear (on this host only); "
                "devices elsewhere need HTTPS (docs/tls.md)", host, settings.http_port)
    return {}


def embedded_broker(settings: CloudSettings, *, require_client_cert: bool = False,
                    auth_dir: Path | None = None) -> Broker:
    """mosquitto (or amqtt): plain MQTT on 127.0.0.1:``mqtt_port``; TLS on ``http_host``:``mqtt_tls_port``
    with the fleet CA's server certificate and CRL when the CA exists."""
    pki_dir = settings.data_dir / PKI_DIR
    tls: BrokerTls | None = None
    if FleetCA.exists(pki_dir) and (pki_dir / "server.pem").is_file():
        tls = BrokerTls.from_pki(pki_dir, require_certificate=require_client_cert)
    elif not is_loopback(settings.http_host):
        log.warning("no fleet CA in %s: the embedded broker listens on loopback only (plain MQTT); "
                    "run `fleet cloud init` for a TLS listener devices can reach", pki_dir)
    kwargs: dict[str, Any] = {"auth_dir": auth_dir}
    if tls is not None:
        kwargs.update(tls=tls, tls_port=settings.mqtt_tls_port, tls_host=settings.http_host)
    if MosquittoBroker.available():
        return MosquittoBroker("127.0.0.1", settings.mqtt_port, data_dir=settings.data_dir / "mosquitto", **kwargs)
    if tls is not None and require_client_cert:
        log.warning("amqtt checks client certificates against the fleet CA but keeps using the device's "
                    "password as its identity (it has no use_identity_as_username)")
    return EmbeddedBroker("127.0.0.1", settings.mqtt_port, **kwargs)
