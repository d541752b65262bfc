"""Where a loopback-only agent socket listens: ``unix:PATH``, ``<scheme>:HOST:PORT`` or off.

Shared by the prediction output socket (``tcp``) and the sidecar signal source (``udp``):
one parser, so both refuse a non-loopback host the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class LocalAddress:
    kind: str  # "unix", or the socket's IP scheme ("tcp" | "udp")
    path: Path | None = None
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"{self.kind}:{self.host}:{self.port}"


def parse_local_address(spec: str, base_dir: Path | None, *, scheme: str, what: str,
                        example_port: int) -> LocalAddress | None:
    """``unix:PATH`` (relative to ``base_dir``), ``<scheme>:HOST:PORT`` (loopback only) or
    ``""``/``off``/``none`` (off).

    Raises:
        ConfigError: another scheme, or a host that is not a loopback address.
    """
    spec = spec.strip()
    if not spec or spec in ("off", "none"):
        return None
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        path = Path(rest)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return LocalAddress("unix", path=path)
    if kind == scheme:
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if host not in LOOPBACK or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{what} {spec!r}: {scheme.upper()} must be a loopback address, "
                              f"e.g. {scheme}:127.0.0.1:{example_port}")
        return LocalAddress(scheme, host=host, port=int(port))
    raise ConfigError(f"{what} {spec!r}: use unix:PATH or {scheme}:127.0.0.1:PORT")
