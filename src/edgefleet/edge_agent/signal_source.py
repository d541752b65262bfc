"""The sidecar signal socket: another process on the device writes signal samples here.

``SignalSource`` binds a datagram socket, either a UNIX one (``unix:signals.sock``, the default,
in the agent's data dir; mode 0600, so only the agent's own user may write) or UDP on a
loopback address (``udp:127.0.0.1:7071``; any local user can write to that). Each datagram
holds one or more newline-delimited JSON samples (``signals.py``)::

    {"t": 1732412345.12, "signals": {"steering_deg": -25.0, "speed_kmh": 12}}

A reader thread parses each sample and keeps the latest value of every signal in a
``SignalTable``; the shadow path reads it once per frame (``Campaigns.context``). A sample that
is malformed, oversize or not finite is dropped and counted (``dropped[reason]``) with at most
one log line per ``LOG_EVERY_S``; nothing a writer sends stops the reader or the pipeline.
Past ``max_rate_hz`` samples in a second the reader stops reading until the next second
(``throttled``; the rest of a datagram is dropped unparsed, ``dropped["rate"]``): the kernel's
queue fills, a UNIX writer waits, UDP datagrams are dropped by the kernel, and a flooding
writer costs the agent nothing more.

Why datagrams: no connection to accept or keep, one thread whatever the number of writers,
and each sample arrives whole or not at all. From a shell::

    echo '{"signals": {"steering_deg": -25}}' | socat - UNIX-SENDTO:/var/lib/edgefleet/signals.sock
    fleet-agent signal send steering_deg=-25 speed_kmh=12
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .local_address import LocalAddress, parse_local_address
from .signals import SCHEMA, SampleError, SignalTable, parse_sample

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65536
LOG_EVERY_S = 10.0


SignalAddress = LocalAddress  # unix:PATH or udp:HOST:PORT


def parse_signal_address(spec: str, base_dir: Path | None = None) -> SignalAddress | None:
    """``unix:PATH`` (relative to ``base_dir``), ``udp:HOST:PORT`` (loopback only) or ``""`` (off).

    Raises:
        ConfigError: another scheme, or a UDP host that is not a loopback address.
    """
    a = parse_local_address(spec, base_dir, scheme="udp", what="signal socket", example_port=7071)
    if a is not None and a.host == "localhost":
        a = SignalAddress("udp", host="127.0.0.1", port=a.port)
    return a


def _bind_unix_private(path: Path) -> socket.socket:
    """Bind a UNIX datagram socket at ``path`` with mode 0600 from the first moment it is reachable
    there: bound in a fresh 0700 directory, chmod-ed, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".signals-", dir=path.parent))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        tmp = staging / "s"
        sock.bind(str(tmp))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)  # replaces a stale socket of a previous run
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(OSError):
            (staging / "s").unlink()
        with contextlib.suppress(OSError):
            staging.rmdir()
    return sock


class SignalSource:
    """Reads sidecar samples on its own thread into ``table``."""

    def __init__(self, address: SignalAddress, table: SignalTable, *, max_rate_hz: float = 2000.0,
                 clock: Callable[[], float] = time.time):
        self.address = address
        self.table = table
        self.clock = clock
        self.max_rate_hz = max_rate_hz  # samples parsed a second at most; past it the reader pauses
        self._window = (0.0, 0)  # (second it counts, samples parsed in it)
        self.throttled = 0  # times the reader paused for the rest of a second (a flood)
        self._next_throttle_log = 0.0
        self.received = 0  # samples kept
        self.dropped: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._inode = -1
        self._last_log = -LOG_EVERY_S
        self._unlogged = 0

    def start(self) -> None:
        a = self.address
        if a.kind == "unix":
            assert a.path is not None
            sock = _bind_unix_private(a.path)
            self._inode = a.path.stat().st_ino
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((a.host, a.port))
            if a.port == 0:
                self.address = SignalAddress("udp", host=a.host, port=sock.getsockname()[1])
        sock.settimeout(0.5)  # the reader looks at the stop flag this often
        self._sock = sock
        self._thread = threading.Thread(target=self._read_loop, name="signal-reader", daemon=True)
        self._thread.start()
        log.info("sidecar signals read on %s (fresh for %.2f s)", self.address, self.table.max_age_s)

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.address.kind == "unix" and self.address.path is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.address.path.stat().st_ino == self._inode:  # not a newer agent's socket
                    self.address.path.unlink()

    def counters(self) -> dict[str, int]:
        """Totals for the agent's metrics (``signal_dropped`` sums every reason)."""
        return {"signal_samples": self.received, "signal_dropped": sum(self.dropped.values()),
                "signal_keys_refused": self.table.refused_keys}

    def _read_loop(self) -> None:
        sock = self._sock
        while sock is not None and self._sock is sock:
            wait = self._over_budget(self.clock())
            if wait > 0:  # a flood: stop reading until the next second; the kernel queue fills and
                self.throttled += 1  # the writer waits (UNIX) or the kernel drops (UDP), costing us nothing
                time.sleep(min(wait, 0.5))
                continue
            try:
                data = sock.recv(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            try:
                self.feed(data)
            except Exception:  # never: but a bug here must not end the reader
                self.dropped["error"] += 1
                log.exception("sidecar sample handling failed")

    def feed(self, data: bytes) -> None:
        """Handle one datagram (one or more lines)."""
        now = self.clock()
        if len(data) > MAX_DATAGRAM:
            self._drop(SampleError("oversize", f"datagram over {MAX_DATAGRAM} bytes"), now)
            return
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            if not self._admit(now):
                self.dropped["rate"] += 1  # the rest of a datagram past the budget: dropped unparsed
                continue
            try:
                t, signals = parse_sample(line, now)
            except SampleError as exc:
                self._drop(exc, now)
                continue
            self.received += 1
            self.table.update(t, signals, now)

    def _over_budget(self, now: float) -> float:
        """Seconds until the reader may parse again (0: now)."""
        second, n = self._window
        if n < self.max_rate_hz or now - second >= 1.0:
            return 0.0
        if now >= self._next_throttle_log:
            log.warning("sidecar signals: more than %g samples a second; reading paused until the next second",
                        self.max_rate_hz)
            self._next_throttle_log = now + LOG_EVERY_S
        return second + 1.0 - now

    def _admit(self, now: float) -> bool:
        """The reader's own budget: parsing holds the interpreter, which the control path needs."""
        second, n = self._window
        if now - second >= 1.0:
            second, n = now, 0
        if n >= self.max_rate_hz:
            return False
        self._window = (second, n + 1)
        return True

    def _drop(self, exc: SampleError, now: float) -> None:
        self.dropped[exc.reason] += 1
        self._unlogged += 1
        if now - self._last_log >= LOG_EVERY_S:
            log.warning("sidecar signals: %d sample(s) dropped since the last note (latest: %s: %s)",
                        self._unlogged, exc.reason, exc)
            self._last_log, self._unlogged = now, 0


def sample_line(signals: dict[str, Any], t: float | None = None) -> bytes:
    """For writers: one sample line (``t`` defaults to the time of arrival)."""
    body: dict[str, Any] = {"schema": SCHEMA, "signals": signals}
    if t is not None:
        body["t"] = t
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def send_signals(address: str | SignalAddress, signals: dict[str, Any], *, t: float | None = None,
                 base_dir: Path | None = None) -> None:
    """For writers: send one sample to the agent's signal socket.

    Raises:
        ConfigError: no socket configured. OSError: nobody is listening there.
    """
    a = address if isinstance(address, SignalAddress) else parse_signal_address(address, base_dir)
    if a is None:
        raise ConfigError("no signal socket configured")
    line = sample_line(signals, t)
    if a.kind == "unix":
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(line, str(a.path))
    else:
        with socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(line, (a.host, a.port))
