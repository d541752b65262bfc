"""Rate-limited warnings: the first occurrence of each kind, then one summary line per interval.

A device that sends 3,000 invalid messages must not write 3,000 warnings. ``SummaryLog``
keys each warning by ``(device, outcome)``: the first occurrence of a key is logged as
is; later ones within ``interval_s`` are only counted, and the next ``warn`` or ``flush``
after the interval writes one line per key with the count and the last message.
Keys are bounded (``max_keys``): past that, new keys are folded into one ``(*, outcome)``
key so a flood of fresh device ids cannot grow memory without bound.

Thread-safe; the clock is passed in (``time.monotonic`` by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    suppressed: int = 0
    last_message: str = ""
    window_start: float = 0.0


class SummaryLog:
    """Args:
        logger: where lines go.
        interval_s: at most one summary line per key per interval.
        max_keys: keys tracked before new ones are folded into ``("*", outcome)``.
        clock: seconds, monotonic.
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.interval_s, self.max_keys, self.clock = logger, interval_s, max_keys, clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._next_flush = 0.0

    def warn(self, device: str, outcome: str, message: str, *args: object) -> None:
        """Log ``message % args`` for ``(device, outcome)``, or count it if one was logged recently."""
        now = self.clock()
        text = message % args if args else message
        emit: str | None = None
        with self._lock:
            key = (device, outcome)
            if key not in self._entries and len(self._entries) >= self.max_keys:
                key = ("*", outcome)
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(window_start=now)
                emit = text
            else:
                entry.suppressed += 1
                entry.last_message = text
        if emit is not None:
            self.logger.warning("%s", emit)
        if now >= self._next_flush:
            self.flush(now)

    def flush(self, now: float | None = None) -> int:
        """Write a summary for every key whose interval has passed; returns lines written."""
        now = self.clock() if now is None else now
        lines: list[tuple[tuple[str, str], int, float, str]] = []
        with self._lock:
            self._next_flush = now + min(self.interval_s, 5.0)
            for key, entry in list(self._entries.items()):
                if now - entry.window_start < self.interval_s:
                    continue
                if entry.suppressed:
                    lines.append((key, entry.suppressed, now - entry.window_start, entry.last_message))
                    self._entries[key] = _Entry(window_start=now)
                else:
                    del self._entries[key]  # quiet for a whole interval: the next one is logged at once
        for (device, outcome), n, span, last in lines:
            self.logger.warning("device %s: %d more %s message(s) in the last %.0fs (last: %s)",
                                device, n, outcome, span, last)
        return len(lines)
