"""A clock the test moves: ``clock()`` reads it, ``clock.sleep(s)`` advances it at once."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
