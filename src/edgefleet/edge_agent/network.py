"""The device's link and the signed network policy: may a bundle or clip move now, how fast?

Flow: ``LinkProbe.current()`` learns the link — a ``[network] link_command`` hook (prints
``metered`` or ``unmetered``, optionally followed by the interface name), else ``[network]
link`` from agent.toml, else NetworkManager's metered flag (``nmcli -t -f
GENERAL.DEVICE,GENERAL.METERED dev show``, the default-route interface's) where ``nmcli``
is on PATH, else ``unknown``; cached for ``probe_interval_s``. ``refusal(policy, link)``
(pure) says why the policy forbids a transfer on that link, or None. ``NetworkGate`` ties
both to the signed ``NetworkPolicy`` and to the two ``TokenBucket`` caps (downloads,
uploads), each the lower of the policy's and the config's.

A link of unknown kind counts as metered under ``unmetered`` (paying per megabyte by
mistake is the costly error). Events, metadata and reports are never deferred.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..protocols.messages import LinkReport, NetworkPolicy
from ..registry.tuf.ratelimit import TokenBucket, effective_rate
from .errors import LinkDeferred

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
_WORDS = {"metered": "metered", "unmetered": "unmetered", "yes": "metered", "no": "unmetered"}

Runner = Callable[[list[str]], str]  # argv -> stdout; raises OSError/subprocess errors


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=True)
    return done.stdout


def parse_hook_output(text: str) -> tuple[str, str | None]:
    """``metered|unmetered [interface]`` → (kind, interface); anything else is ``unknown``."""
    words = text.strip().split()
    if not words:
        return "unknown", None
    kind = _WORDS.get(words[0].lower(), "unknown")
    iface = words[1] if len(words) > 1 and kind != "unknown" else None
    return kind, _iface(iface)


def parse_nmcli(text: str, prefer: str | None = None) -> tuple[str, str | None]:
    """``nmcli -t -f GENERAL.DEVICE,GENERAL.METERED dev show`` → (kind, interface).

    The ``prefer`` interface (the default route's) wins; else the first device whose flag is
    known. ``yes (guessed)`` counts as metered, ``no (guessed)`` as unmetered."""
    devices: list[tuple[str, str]] = []
    name: str | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "GENERAL.DEVICE":
            name = value.strip()
        elif key == "GENERAL.METERED" and name:
            devices.append((name, _WORDS.get(value.strip().split(" ")[0].lower(), "unknown")))
    for dev, kind in devices:
        if dev == prefer:
            return kind, _iface(dev)
    for dev, kind in devices:
        if kind != "unknown" and dev != "lo":
            return kind, _iface(dev)
    return "unknown", None


def default_route_interface(route_table: str) -> str | None:
    """The interface of the IPv4 default route in ``/proc/net/route`` text, if any."""
    for line in route_table.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 2 and cols[1] == "00000000":
            return cols[0]
    return None


def _iface(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return LinkReport(interface=name).interface
    except ValueError:
        return None


def refusal(policy: NetworkPolicy, link: LinkReport, what: str = "download") -> LinkDeferred | None:
    """Why ``policy`` forbids the transfer ``what`` on ``link`` (None: it may go)."""
    if policy.download == "unmetered" and link.kind != "unmetered":
        seen = "metered" if link.kind == "metered" else f"of unknown kind ({link.source})"
        via = f" ({link.interface})" if link.interface else ""
        return LinkDeferred(f"{what} waits for an unmetered link: the link{via} is {seen}; "
                            "the network policy allows unmetered links only", code="E_LINK_METERED")
    if policy.download == "interfaces" and link.interface not in policy.interfaces:
        return LinkDeferred(f"{what} waits for one of the interfaces {', '.join(policy.interfaces)}: "
                            f"the link is on {link.interface or 'an unknown interface'}", code="E_LINK_INTERFACE")
    return None


class LinkProbe:
    """Learns the device's link kind (see the module docstring), at most once per interval."""

    def __init__(self, *, link: str = "auto", link_command: str = "", interface: str | None = None,
                 probe_interval_s: float = 10.0, runner: Runner = _run, clock: Callable[[], float] = time.monotonic,
                 route_file: Path = Path("/proc/net/route")):
        self.link = link
        self.argv = shlex.split(link_command) if link_command else []
        self.interface = interface
        self.interval = probe_interval_s
        self.runner = runner
        self.clock = clock
        self.route_file = route_file
        self._cached: tuple[float, LinkReport] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, section: Any, **kw: Any) -> LinkProbe:
        return cls(link=section.link, link_command=section.link_command, interface=section.interface,
                   probe_interval_s=section.probe_interval_s, **kw)

    def current(self) -> LinkReport:
        with self._lock:
            now = self.clock()
            if self._cached is not None and now - self._cached[0] < self.interval:
                return self._cached[1]
            report = self._probe()
            if self._cached is None or self._cached[1] != report:
                log.info("network link: %s%s (from %s)", report.kind,
                         f" on {report.interface}" if report.interface else "", report.source)
            self._cached = (now, report)
            return report

    def _route_iface(self) -> str | None:
        try:
            return default_route_interface(self.route_file.read_text())
        except OSError:
            return None

    def _probe(self) -> LinkReport:
        if self.argv:
            try:
                kind, iface = parse_hook_output(self.runner(self.argv))
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("network: link_command %s failed: %s", shlex.join(self.argv), exc)
                kind, iface = "unknown", None
            return LinkReport(kind=kind, interface=iface or self.interface or self._route_iface(),  # type: ignore[arg-type]
                              source="command")
        if self.link != "auto":
            return LinkReport(kind=self.link, interface=self.interface or self._route_iface(),  # type: ignore[arg-type]
                              source="config")
        if shutil.which("nmcli"):
            route = self.interface or self._route_iface()
            try:
                kind, iface = parse_nmcli(self.runner(["nmcli", "-t", "-f", "GENERAL.DEVICE,GENERAL.METERED",
                                                       "dev", "show"]), prefer=route)
                return LinkReport(kind=kind, interface=iface or route, source="networkmanager")  # type: ignore[arg-type]
            except (OSError, subprocess.SubprocessError) as exc:
                log.debug("network: nmcli failed: %s", exc)
        return LinkReport(kind="unknown", interface=self.interface or self._route_iface(), source="none")


class NetworkGate:
    """The signed policy, the probe and the two caps, as the updater and uploader use them.

    Args:
        probe: where the link kind comes from.
        max_download_bps / max_upload_bps: the device's own caps (``[network]``), None for none.
        download / upload: the buckets the fetchers and the uploader read; their rates
            are set here to min(policy, config).
    """

    def __init__(self, probe: LinkProbe, *, max_download_bps: int | None = None, max_upload_bps: int | None = None,
                 download: TokenBucket | None = None, upload: TokenBucket | None = None):
        self.probe = probe
        self.config_download_bps = max_download_bps
        self.config_upload_bps = max_upload_bps
        self.download = download or TokenBucket()
        self.upload = upload or TokenBucket()
        self.policy = NetworkPolicy()
        self.set_policy(self.policy)

    def set_policy(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self.download.set_rate(effective_rate(policy.max_download_bps, self.config_download_bps))
        self.upload.set_rate(effective_rate(policy.max_upload_bps, self.config_upload_bps))

    def link(self) -> LinkReport:
        return self.probe.current()

    def download_refusal(self) -> LinkDeferred | None:
        return refusal(self.policy, self.link(), "bundle download")

    def upload_refusal(self) -> LinkDeferred | None:
        return refusal(self.policy, self.link(), "clip upload")
