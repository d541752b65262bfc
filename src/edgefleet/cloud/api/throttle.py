"""Throttle failed authentication: per client address and per token prefix, in memory.

Every *failed* authentication (a token presented and refused) counts against two keys:
the client's address and the token's prefix (the first 8 characters after ``efk_`` /
``efd_``, or of the whole token otherwise). A key that reaches ``max_failures`` within
``window_s`` seconds is locked for ``window_s`` seconds: until then every failure under
that key is answered 429 with ``Retry-After`` instead of 401 (and not counted again).

Successful authentication is never slowed or refused, not even from a locked address:
a valid token passes at once, so an attacker who shares a NAT address with devices, or
who knows a token's prefix, cannot lock a legitimate client out. (Tokens carry 256 random
bits, so telling a guesser "that one was right" while locked gives nothing away.) Memory
is bounded: at most ``max_keys`` keys are tracked (the least recently failed forgotten
first), each holding at most ``max_failures`` timestamps.

``AuthThrottle`` is the pure, thread-safe core (the clock is passed in); ``refused`` is the
FastAPI glue used by ``deps.authenticate_request``, the docs routes and the web login. One
``AuthThrottle`` lives on ``app.state.auth_throttle`` (per process: replicas each count
their own failures).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)

TOKEN_PREFIXES = ("efk_", "efd_")
PREFIX_CHARS = 8


def token_prefix(token: str) -> str:
    """The part of a token that names its throttle key (never the whole secret)."""
    for p in TOKEN_PREFIXES:
        if token.startswith(p):
            return p + token[len(p) : len(p) + PREFIX_CHARS]
    return token[:PREFIX_CHARS]


@dataclass
class _Key:
    failures: deque[float]
    locked_until: float = 0.0


class AuthThrottle:
    """Count failures per key; lock a key that has ``max_failures`` within ``window_s``."""

    def __init__(self, *, max_failures: int = 20, window_s: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if max_failures < 1 or window_s <= 0 or max_keys < 2:
            raise ValueError("max_failures >= 1, window_s > 0 and max_keys >= 2 are required")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, _Key] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys_for(address: str, token: str) -> tuple[str, str]:
        return f"addr:{address}", f"token:{token_prefix(token)}"

    def retry_after(self, address: str, token: str) -> float | None:
        """Seconds until failures from ``address`` / with ``token`` get 401 again; None if now."""
        now = self.clock()
        with self._lock:
            return self._wait(self.keys_for(address, token), now)

    def failure(self, address: str, token: str) -> tuple[float | None, list[str]]:
        """One failed authentication: (seconds to wait if a key is locked, else None; keys it locked).

        While a key is locked the failure is not counted again (a flood does not extend it).
        """
        now = self.clock()
        names = self.keys_for(address, token)
        with self._lock:
            wait = self._wait(names, now)
            return (wait, []) if wait is not None else (None, self._count(names, now))

    def _wait(self, names: tuple[str, str], now: float) -> float | None:
        waits = [k.locked_until - now for name in names
                 if (k := self._keys.get(name)) is not None and k.locked_until > now]
        return max(waits) if waits else None

    def _count(self, names: tuple[str, str], now: float) -> list[str]:
        locked: list[str] = []
        for name in names:
            key = self._keys.pop(name, None) or _Key(deque(maxlen=self.max_failures))
            self._keys[name] = key  # most recently failed last
            while key.failures and key.failures[0] <= now - self.window_s:
                key.failures.popleft()
            key.failures.append(now)
            if len(key.failures) >= self.max_failures:
                key.locked_until = now + self.window_s
                key.failures.clear()
                locked.append(name)
        while len(self._keys) > self.max_keys:
            self._evict(now)
        return locked

    def tracked(self) -> int:
        with self._lock:
            return len(self._keys)

    def _evict(self, now: float) -> None:
        """Forget the least recently failed key that is not locked (a locked one if all are)."""
        for name, key in self._keys.items():
            if key.locked_until <= now:
                del self._keys[name]
                return
        self._keys.popitem(last=False)


# ----- FastAPI glue -----


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def throttle_of(request: Request) -> AuthThrottle | None:
    return getattr(request.app.state, "auth_throttle", None)


def too_many(retry_after: float) -> HTTPException:
    seconds = max(1, math.ceil(retry_after))
    return HTTPException(
        status_code=429, headers={"Retry-After": str(seconds)},
        detail=f"too many failed authentication attempts from this address or with this token; retry in {seconds} s",
    )


def refused(request: Request, token: str | None) -> float | None:
    """Count a refused ``token``; returns seconds to wait (answer 429) while its address or
    prefix is locked, None to answer the usual 401. Logs each lock with the client address."""
    throttle = throttle_of(request)
    if throttle is None or not token:
        return None
    address = client_address(request)
    wait, locked = throttle.failure(address, token)
    for key in locked:
        log.warning("auth throttled for %.0f s: %s after %d failures in %.0f s (client address %s, path %s)",
                    throttle.window_s, key, throttle.max_failures, throttle.window_s, address, request.url.path)
    return wait


__all__ = ["AuthThrottle", "client_address", "refused", "throttle_of", "token_prefix", "too_many"]
