"""TLS for the agent's two links: HTTPS to the controller, MQTT over TLS to the broker.

``http_verify(ca_file)`` is what every HTTP client of the agent passes as httpx's
``verify=``: a context trusting only ``ca_file`` (the fleet CA) when one is configured,
else the system's CAs — never "verify nothing". ``warn_plain_links`` logs a WARNING
for each link that crosses the network in clear (plain HTTP or MQTT to a host that is
not loopback); loopback demos stay quiet. Standard library only (device-safe).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from urllib.parse import urlsplit

from .config import AgentConfig
from .errors import ConfigError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_verify(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    """httpx's ``verify=``: trust only ``ca_file`` when set, else the system CAs.

    Raises:
        ConfigError: ``ca_file`` is set but unreadable or not a PEM certificate.
    """
    if ca_file is None:
        return True
    try:
        ctx = ssl.create_default_context(cafile=os.fspath(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"agent.ca_file {ca_file}: cannot load a CA certificate from it: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def warn_plain_links(config: AgentConfig) -> list[str]:
    """Log a WARNING for each link that is not encrypted and leaves this host; returns them."""
    plain: list[str] = []
    url = urlsplit(config.agent.controller_url)
    if url.scheme == "http" and not is_loopback(url.hostname or ""):
        plain.append(f"HTTP to {url.hostname}")
        log.warning("device %s talks plain HTTP to %s: its token and uploads cross the network in clear "
                    "(use an https:// controller_url; docs/tls.md)", config.device_id, url.hostname)
    if not config.mqtt.tls and not is_loopback(config.mqtt.host):
        plain.append(f"MQTT to {config.mqtt.host}")
        log.warning("device %s talks plain MQTT to %s:%d: its broker password and messages cross the network "
                    "in clear (set [mqtt] tls = true and ca_file; docs/tls.md)",
                    config.device_id, config.mqtt.host, config.mqtt.port)
    return plain
