"""Disk safety on the device: recognise a full disk, plan space, and say what is short.

Every write path of the agent (download, unpack, engine cache, state, outbox, clips,
report-key sequence) meets a full disk as ``ENOSPC``, ``EDQUOT`` or ``EFBIG`` (an
``OSError``), or as SQLite's "database or disk is full". ``is_disk_full`` recognises all
of them; the write paths turn them into ``DiskFull`` (``E_DISK_FULL``) carrying the bytes
the step needs and the bytes free, and keep the running model.

``space_needed`` is the pure plan of a deployment: what is still to download (the signed
length less the partial file already kept) plus the unpacked size, plus a margin.
``DiskWatch`` keeps the device-wide conditions (state not saved, outbox full, ...) that
``reported.disk`` carries, and clears each one when its write succeeds again.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..protocols.messages import DiskShortage
from .errors import DiskFull

log = logging.getLogger(__name__)

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MARGIN_BYTES = 1024 * 1024  # kept free beyond what a deployment needs (state, metadata, reports)
MARGIN_FRACTION = 0.01  # and 1% of the bundle


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the disk or a quota running out."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, DiskFull) or getattr(seen, "code", None) == "E_DISK_FULL":
            return True
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            return True
        if isinstance(seen, sqlite3.Error) and ("disk is full" in str(seen) or
                                                getattr(seen, "sqlite_errorcode", None) == 13):  # SQLITE_FULL
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes free for this process on the filesystem holding ``path`` (or its nearest
    existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def margin(length: int) -> int:
    return MARGIN_BYTES + int(length * MARGIN_FRACTION)


@dataclass(frozen=True)
class SpacePlan:
    """What one deployment still needs on one filesystem, against what is free there."""

    download: int  # bytes still to fetch (signed length minus the partial file kept)
    unpack: int  # the unpacked bundle
    margin: int
    free: int

    @property
    def needed(self) -> int:
        return self.download + self.unpack + self.margin

    @property
    def fits(self) -> bool:
        return self.free >= self.needed


def space_needed(*, length: int, have: int, unpacked: int, free: int, downloaded: bool = False) -> SpacePlan:
    """Plan the space of one deployment (pure).

    Args:
        length: the signed length of the bundle.
        have: bytes of it already in the partial file (kept from an earlier attempt).
        unpacked: the unpacked size (the signed length is an upper bound for a tar).
        free: bytes free on the filesystem.
        downloaded: the whole bundle is on disk already (only the unpack is left).
    """
    download = 0 if downloaded else max(0, length - max(0, have))
    return SpacePlan(download=download, unpack=max(0, unpacked), margin=margin(length), free=max(0, free))


def disk_full(what: str, path: str | os.PathLike[str], needed: int, exc: BaseException | None = None) -> DiskFull:
    """A ``DiskFull`` for step ``what`` writing under ``path`` that needs ``needed`` bytes."""
    try:
        free = free_bytes(path)
    except OSError:
        free = 0
    cause = f" ({os.strerror(exc.errno)})" if isinstance(exc, OSError) and exc.errno else ""
    return DiskFull(f"disk full{cause}: {what} needs {needed} bytes in {path}, {free} free "
                    f"({max(0, needed - free)} more needed)", needed=needed, free=free, path=str(path), what=what)


class DiskWatch:
    """Device-wide disk conditions, keyed by what could not be written (thread-safe).

    ``note`` records a condition (and calls ``on_change`` when it is new); ``clear`` drops
    it once that write succeeds again. ``current`` is the most important condition for
    ``reported.disk`` (the largest shortfall), or None.
    """

    def __init__(self, on_change: Callable[[], None] | None = None):
        self.on_change = on_change
        self._lock = threading.Lock()
        self._conditions: dict[str, DiskShortage] = {}

    def note(self, error: DiskFull) -> None:
        what = error.what or "write"
        with self._lock:
            old = self._conditions.get(what)
            self._conditions[what] = DiskShortage(
                what=what, path=(error.path or "")[:512], bytes_needed=max(0, error.needed or 0),
                bytes_free=max(0, error.free or 0), reason=str(error)[:2000],
                since=old.since if old is not None else datetime.now(timezone.utc),
            )
        if old is None:
            log.error("disk full: %s", error)
            if self.on_change is not None:
                try:
                    self.on_change()
                except Exception as exc:  # a report that cannot go out now goes with the next one
                    log.debug("disk condition not reported now: %s", exc)

    def clear(self, what: str) -> None:
        with self._lock:
            gone = self._conditions.pop(what, None)
        if gone is not None:
            log.info("disk: %s writes again", what)
            if self.on_change is not None:
                try:
                    self.on_change()
                except Exception as exc:
                    log.debug("disk condition not reported now: %s", exc)

    def active(self, what: str) -> bool:
        with self._lock:
            return what in self._conditions

    def current(self) -> DiskShortage | None:
        with self._lock:
            if not self._conditions:
                return None
            return max(self._conditions.values(), key=lambda c: c.bytes_needed - c.bytes_free)

    def all(self) -> list[DiskShortage]:
        with self._lock:
            return list(self._conditions.values())
