"""A token bucket that caps a byte stream at ``rate`` bytes per second.

Pure core, thin shell: ``reserve(n, now)`` books ``n`` bytes against the bucket and returns
how long the caller must wait before using them (no clock read, no sleep); ``consume(n)``
is the shell that reads the clock and sleeps. The bucket starts *empty* and holds at most
``burst_s`` seconds' worth of tokens, so a fresh bucket (a restarted agent resuming a part
file) and a reconnect after a drop (the same bucket, still in debt) never send faster than
the cap: over any window of ``T`` seconds at most ``rate * (T + burst_s)`` bytes pass, plus
the one chunk a caller reads before it waits.

``rate`` None means no cap. ``set_rate`` changes the cap in place (the debt already
booked is kept, so lowering it mid-transfer takes effect at once). Thread-safe. Used by
the device's bundle downloads (``fetcher.ResumableFetcher``) and clip uploads
(``edge_agent.uploader``). Standard library only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MIN_CHUNK = 4096
MAX_CHUNK = 1024 * 1024


class TokenBucket:
    """Caps bytes per second.

    Args:
        rate: bytes per second, or None for no cap.
        burst_s: the most tokens the bucket holds, in seconds of ``rate``.
        clock: monotonic clock (seconds).
        sleep: how to wait (tests may pass a fake together with ``clock``).
    """

    def __init__(self, rate: float | None = None, *, burst_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if burst_s < 0:
            raise ValueError("burst_s must be >= 0")
        self._rate = _check_rate(rate)
        self.burst_s = burst_s
        self.clock = clock
        self.sleep = sleep
        self._tokens = 0.0  # may go negative: bytes booked ahead of the rate (a debt)
        self._stamp: float | None = None
        self._lock = threading.Lock()

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        """Change the cap (None: no cap); booked debt is kept."""
        rate = _check_rate(rate)
        with self._lock:
            if rate is not None and self._rate is not None and self._stamp is not None:
                self._refill(self.clock())  # tokens earned so far at the old rate
            self._rate = rate
            if rate is None:
                self._tokens, self._stamp = 0.0, None

    def chunk_size(self, per_second: int = 20) -> int:
        """A read size that keeps each wait short (1/``per_second`` of a second of bytes)."""
        if self._rate is None:
            return MAX_CHUNK
        return int(min(MAX_CHUNK, max(MIN_CHUNK, self._rate / per_second)))

    def _refill(self, now: float) -> None:
        assert self._rate is not None
        if self._stamp is None:
            self._stamp = now
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self._rate * self.burst_s, self._tokens + elapsed * self._rate)
        self._stamp = now

    def reserve(self, n: int, now: float) -> float:
        """Book ``n`` bytes at time ``now``; returns the seconds to wait before using them."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            if self._rate is None:
                return 0.0
            self._refill(now)
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def consume(self, n: int) -> float:
        """Book ``n`` bytes and sleep until they are within the cap; returns the seconds slept."""
        wait = self.reserve(n, self.clock())
        if wait > 0:
            self.sleep(wait)
        return wait


def _check_rate(rate: float | None) -> float | None:
    if rate is None:
        return None
    if not rate > 0:
        raise ValueError(f"rate must be > 0 bytes/s (or None for no cap), got {rate!r}")
    return float(rate)


def effective_rate(*caps: float | int | None) -> float | None:
    """The lowest of the caps given (None entries are "no cap"); None when none is set."""
    set_caps = [float(c) for c in caps if c is not None]
    return min(set_caps) if set_caps else None
