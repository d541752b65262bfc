"""The persistent, byte-capped outbox where captures wait for upload.

One item = one capture: the event record (``protocols.Event`` JSON, kept in SQLite), an
optional clip file and an optional keyframe JPEG (files under ``root_dir/files``), a
priority and the upload progress. ``put`` → ``pending`` → (uploader) → ``mark_uploaded``.

Durability: files are written to a temp file, fsynced and ``os.replace``d into place (and
the directory fsynced) before the index row is committed (SQLite WAL, synchronous=FULL).
``put`` is durable when it returns; a crash at any point leaves either the whole item or
nothing, and ``open`` removes temp files and files the index does not reference.

Cap: ``max_bytes`` bounds everything under ``root_dir`` (files rounded up to 4 KiB blocks
plus the SQLite files), and ``min_free_bytes`` keeps the filesystem from filling. When a
new item does not fit, clips are evicted lowest-priority-then-oldest, but never one whose
priority is higher than the newcomer's; if that does not free enough, the newcomer's own
clip is dropped. An evicted clip leaves its event behind (``clip_evicted=True``): the event
is still uploaded, with ``clip_id`` None, and ``stats().evicted_clips`` counts evictions.

A full disk (``ENOSPC``/``EDQUOT``, SQLite's "disk is full") while writing an item is
``OutboxFull`` with the bytes needed and free: nothing half-written stays, nothing already
stored is lost, and the next put tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgefleet.protocols import Event, encode

from .disk import free_bytes, is_disk_full
from .errors import AgentError

BLOCK = 4096
_COPY_CHUNK = 1024 * 1024
# Room kept for what the index grows by within one put (WAL pages of two transactions).
_INDEX_SLACK = 96 * 1024
_DB_NAME = "outbox.sqlite3"
_EVENT_PRIORITY = 2**63  # an event record outranks every clip
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    event BLOB NOT NULL,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    clip_file TEXT,
    clip_size INTEGER NOT NULL DEFAULT 0,
    clip_sha256 TEXT,
    clip_content_type TEXT,
    keyframe_file TEXT,
    keyframe_size INTEGER NOT NULL DEFAULT 0,
    keyframe_sha256 TEXT,
    clip_evicted INTEGER NOT NULL DEFAULT 0,
    upload_id TEXT,
    acked_bytes INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_by_eviction ON items (priority, id);
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class OutboxError(AgentError):
    """Root of the outbox's errors."""

    code = "E_OUTBOX"


class ItemTooLarge(OutboxError):
    """One item is larger than the whole cap; it can never be stored."""


class OutboxFull(OutboxError):
    """Not even the event record fits: the filesystem is below ``min_free_bytes``, or the
    disk ran out while writing (``needed``/``free``: bytes the item needs, bytes free)."""

    code = "E_DISK_FULL"

    def __init__(self, message: str, *, needed: int | None = None, free: int | None = None):
        super().__init__(message)
        self.needed, self.free = needed, free


def blocks(n: int) -> int:
    """Bytes a file of ``n`` bytes occupies, rounded up to whole 4 KiB blocks."""
    return -(-n // BLOCK) * BLOCK


@dataclass(frozen=True)
class OutboxItem:
    item_id: int
    event: Event
    event_json: bytes
    priority: int
    created: float
    clip_path: Path | None
    clip_size: int
    clip_sha256: str | None
    clip_content_type: str | None
    keyframe_path: Path | None
    keyframe_size: int
    keyframe_sha256: str | None
    clip_evicted: bool
    upload_id: str | None
    acked_bytes: int
    attempts: int

    @property
    def payload_bytes(self) -> int:
        """Bytes still to send for this item if nothing was acknowledged."""
        return len(self.event_json) + self.clip_size + self.keyframe_size


@dataclass(frozen=True)
class OutboxStats:
    items: int
    bytes: int  # on disk, files (in blocks) + index
    clips: int
    evicted_clips: int
    dropped_items: int  # rejected by the server, or removed without upload


@dataclass(frozen=True)
class _Candidate:
    item_id: int
    priority: int
    freed: int


def plan_eviction(
    candidates: list[_Candidate], need: int, new_priority: int
) -> list[_Candidate] | None:
    """Pick clips to evict to free ``need`` bytes, lowest priority then oldest first.

    ``candidates`` are ordered (priority asc, id asc). Clips with a priority higher than
    the newcomer's are never evicted for it. Returns None when that cannot free enough.
    """
    chosen: list[_Candidate] = []
    freed = 0
    for cand in candidates:
        if freed >= need:
            break
        if cand.priority > new_priority:
            break
        chosen.append(cand)
        freed += cand.freed
    return chosen if freed >= need else None


class Outbox:
    """Captures waiting for upload, persisted under ``root_dir`` and capped in bytes."""

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        max_bytes: int,
        *,
        min_free_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ):
        if max_bytes <= _INDEX_SLACK * 2:
            raise OutboxError(f"max_bytes must exceed {_INDEX_SLACK * 2}")
        self.root = Path(root_dir)
        self.files = self.root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.root / _DB_NAME, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA wal_autocheckpoint=16")
        self._db.execute("PRAGMA journal_size_limit=65536")
        self._db.executescript(_SCHEMA)
        self._clean_orphans()

    # -- writing ------------------------------------------------------------------------

    def put(
        self,
        event: Event,
        clip: str | os.PathLike[str] | bytes | None,
        keyframe: bytes | None,
        priority: int,
        *,
        clip_content_type: str | None = None,
    ) -> int:
        """Store one capture durably; returns its item id.

        The clip (a file path, which is copied, or bytes) may be dropped to respect the cap
        (see module docstring); the event is always kept.

        Raises:
            ItemTooLarge: the item alone is larger than ``max_bytes``.
            OutboxFull: not even the event fits (the filesystem is below ``min_free_bytes``).
        """
        event_json = encode(event)
        clip_size = self._size_of(clip)
        kf_size = len(keyframe) if keyframe is not None else 0
        if clip_size == 0:
            clip = None
        if kf_size == 0:
            keyframe = None
        files_need = blocks(clip_size) + blocks(kf_size)
        if files_need + len(event_json) + _INDEX_SLACK > self.max_bytes:
            raise ItemTooLarge(
                f"item of {files_need + len(event_json)} bytes exceeds the outbox cap of "
                f"{self.max_bytes}"
            )
        content_type = clip_content_type or self._content_type(clip)
        try:
            return self._put_locked(event, event_json, clip, keyframe, priority, content_type, files_need)
        except (OSError, sqlite3.Error) as exc:
            if not is_disk_full(exc):
                raise
            needed = len(event_json) + files_need + _INDEX_SLACK
            try:
                free = free_bytes(self.root)
            except OSError:
                free = 0
            raise OutboxFull(f"disk full writing event {event.event_id}: {needed} bytes needed, "
                             f"{free} free in {self.root}", needed=needed, free=free) from exc

    def _put_locked(self, event: Event, event_json: bytes, clip: str | os.PathLike[str] | bytes | None,
                    keyframe: bytes | None, priority: int, content_type: str | None, files_need: int) -> int:
        with self._lock:
            room = self._room() - len(event_json)
            keep_clip = True
            if files_need > room:
                plan = plan_eviction(self._candidates(), files_need - room, priority)
                keep_clip = plan is not None
                if plan is None and room < 0:
                    # The event record itself must fit: it goes before any clip does.
                    plan = plan_eviction(self._candidates(), -room, _EVENT_PRIORITY)
                    if plan is None:
                        free = self._free_bytes()
                        raise OutboxFull(
                            f"no room even for the event: {free} bytes free on "
                            f"disk (min_free_bytes={self.min_free_bytes}), cap {self.max_bytes}",
                            needed=self.min_free_bytes + len(event_json) + _INDEX_SLACK, free=free,
                        )
                if plan:
                    self._evict(plan)
            if not keep_clip:
                clip, keyframe = None, None
            return self._insert(event, event_json, clip, keyframe, priority, content_type,
                                evicted=not keep_clip)

    def set_upload(self, item_id: int, upload_id: str | None) -> None:
        with self._lock:
            self._db.execute("UPDATE items SET upload_id=? WHERE id=?", (upload_id, item_id))

    def set_progress(self, item_id: int, acked_bytes: int) -> None:
        """Persist how many bytes of this item the server has acknowledged."""
        with self._lock:
            self._db.execute("UPDATE items SET acked_bytes=? WHERE id=?", (acked_bytes, item_id))

    def record_attempt(self, item_id: int) -> int:
        """Count a failed verification attempt; returns the new count."""
        with self._lock:
            self._db.execute("UPDATE items SET attempts=attempts+1 WHERE id=?", (item_id,))
            row = self._db.execute("SELECT attempts FROM items WHERE id=?", (item_id,)).fetchone()
            return int(row[0]) if row else 0

    def mark_uploaded(self, item_id: int) -> None:
        """The server has the item: forget it and delete its files."""
        self._remove(item_id, counter=None)

    def drop(self, item_id: int) -> None:
        """Give up on an item the server refuses for good (counted in ``dropped_items``)."""
        self._remove(item_id, counter="dropped_items")

    # -- reading ------------------------------------------------------------------------

    def pending(self, limit: int = 100) -> list[OutboxItem]:
        """Items waiting, most important first (priority desc, then oldest)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM items ORDER BY priority DESC, id ASC LIMIT ?", (limit,)
            ).fetchall()
        return [self._item(r) for r in rows]

    def get(self, item_id: int) -> OutboxItem | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE id=?", (item_id,)).fetchone()
        return self._item(row) if row else None

    def stats(self) -> OutboxStats:
        with self._lock:
            items, clips = self._db.execute(
                "SELECT COUNT(*), COUNT(clip_file) FROM items"
            ).fetchone()
            return OutboxStats(
                items=int(items),
                bytes=self._files_bytes() + self._index_bytes(),
                clips=int(clips),
                evicted_clips=self._counter("evicted_clips"),
                dropped_items=self._counter("dropped_items"),
            )

    def counter(self, key: str) -> int:
        with self._lock:
            return self._counter(key)

    def add_to_counter(self, key: str, n: int) -> int:
        """Persistently add ``n`` to a named counter (the uploader's daily byte budget)."""
        with self._lock:
            self._bump(key, n)
            return self._counter(key)

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _size_of(clip: str | os.PathLike[str] | bytes | None) -> int:
        if clip is None:
            return 0
        if isinstance(clip, (bytes, bytearray, memoryview)):
            return len(clip)
        return os.stat(clip).st_size

    @staticmethod
    def _content_type(clip: str | os.PathLike[str] | bytes | None) -> str | None:
        if clip is None:
            return None
        if isinstance(clip, (bytes, bytearray, memoryview)):
            return "video/webm"
        return "video/mp4" if str(clip).lower().endswith(".mp4") else "video/webm"

    def _free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _index_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                total += blocks((self.root / (_DB_NAME + suffix)).stat().st_size)
        return total

    def _files_bytes(self) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(CASE WHEN clip_file IS NULL THEN 0 ELSE clip_size END), 0),"
            " COALESCE(SUM(CASE WHEN keyframe_file IS NULL THEN 0 ELSE keyframe_size END), 0),"
            " COUNT(clip_file), COUNT(keyframe_file) FROM items"
        ).fetchone()
        # Upper bound of block rounding: one partial block per file.
        return int(row[0]) + int(row[1]) + BLOCK * (int(row[2]) + int(row[3]))

    def _room(self) -> int:
        """Bytes a new item may still take, by the cap and by the disk's free space."""
        by_cap = self.max_bytes - self._files_bytes() - self._index_bytes() - _INDEX_SLACK
        by_disk = self._free_bytes() - self.min_free_bytes - _INDEX_SLACK
        return min(by_cap, by_disk)

    def _candidates(self) -> list[_Candidate]:
        rows = self._db.execute(
            "SELECT id, priority, clip_size, keyframe_size,"
            " (clip_file IS NOT NULL) + (keyframe_file IS NOT NULL) FROM items"
            " WHERE clip_file IS NOT NULL OR keyframe_file IS NOT NULL ORDER BY priority, id"
        ).fetchall()
        return [
            _Candidate(int(r[0]), int(r[1]), int(r[2]) + int(r[3]) + BLOCK * int(r[4])) for r in rows
        ]

    def _evict(self, plan: list[_Candidate]) -> None:
        ids = [c.item_id for c in plan]
        doomed: list[str] = []
        with self._tx():
            for item_id in ids:
                row = self._db.execute(
                    "SELECT clip_file, keyframe_file FROM items WHERE id=?", (item_id,)
                ).fetchone()
                doomed += [name for name in row if name]
                self._db.execute(
                    "UPDATE items SET clip_file=NULL, clip_size=0, clip_sha256=NULL,"
                    " keyframe_file=NULL, keyframe_size=0, keyframe_sha256=NULL,"
                    " clip_evicted=1, acked_bytes=0 WHERE id=?",
                    (item_id,),
                )
            self._bump("evicted_clips", len(ids))
        for name in doomed:
            (self.files / name).unlink(missing_ok=True)

    def _insert(
        self,
        event: Event,
        event_json: bytes,
        clip: str | os.PathLike[str] | bytes | None,
        keyframe: bytes | None,
        priority: int,
        content_type: str | None,
        *,
        evicted: bool,
    ) -> int:
        token = uuid.uuid4().hex
        clip_file = clip_sha = kf_file = kf_sha = None
        clip_size = kf_size = 0
        try:
            if clip is not None:
                clip_file = f"{token}.clip"
                clip_size, clip_sha = self._write_file(clip_file, clip)
            if keyframe is not None:
                kf_file = f"{token}.jpg"
                kf_size, kf_sha = self._write_file(kf_file, keyframe)
            self._fsync_dir()
            with self._tx():
                cur = self._db.execute(
                    "INSERT INTO items (event_id, event, priority, created, clip_file, clip_size,"
                    " clip_sha256, clip_content_type, keyframe_file, keyframe_size,"
                    " keyframe_sha256, clip_evicted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (event.event_id, event_json, priority, self._clock(), clip_file, clip_size,
                     clip_sha, content_type if clip_file else None, kf_file, kf_size, kf_sha,
                     int(evicted)),
                )
                if evicted:
                    self._bump("evicted_clips", 1)
                return int(cur.lastrowid or 0)
        except BaseException:
            for name in (clip_file, kf_file):
                if name:
                    (self.files / name).unlink(missing_ok=True)
            raise

    def _write_file(self, name: str, src: str | os.PathLike[str] | bytes) -> tuple[int, str]:
        tmp = self.files / f".tmp-{name}"
        h = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in _chunks(src):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.files / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size, h.hexdigest()

    def _fsync_dir(self) -> None:
        fd = os.open(self.files, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove(self, item_id: int, *, counter: str | None) -> None:
        with self._lock:
            row = self._db.execute(
                "SELECT clip_file, keyframe_file FROM items WHERE id=?", (item_id,)
            ).fetchone()
            if row is None:
                return
            with self._tx():
                self._db.execute("DELETE FROM items WHERE id=?", (item_id,))
                if counter:
                    self._bump(counter, 1)
            for name in row:
                if name:
                    (self.files / name).unlink(missing_ok=True)

    def _clean_orphans(self) -> None:
        """Remove temp files and files of puts that never committed (crash leftovers)."""
        known: set[str] = set()
        for clip_file, kf_file in self._db.execute("SELECT clip_file, keyframe_file FROM items"):
            known.update(n for n in (clip_file, kf_file) if n)
        for p in self.files.iterdir():
            if p.name not in known:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    p.unlink()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:  # e.g. the disk filled: nothing of this transaction stays
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def _bump(self, key: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO counters (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (key, n),
        )

    def _counter(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _item(self, r: tuple) -> OutboxItem:
        event_json = bytes(r[2])
        return OutboxItem(
            item_id=int(r[0]),
            event=Event.model_validate(json.loads(event_json)),
            event_json=event_json,
            priority=int(r[3]),
            created=float(r[4]),
            clip_path=self.files / r[5] if r[5] else None,
            clip_size=int(r[6]),
            clip_sha256=r[7],
            clip_content_type=r[8],
            keyframe_path=self.files / r[9] if r[9] else None,
            keyframe_size=int(r[10]),
            keyframe_sha256=r[11],
            clip_evicted=bool(r[12]),
            upload_id=r[13],
            acked_bytes=int(r[14]),
            attempts=int(r[15]),
        )


_COLUMNS = (
    "id, event_id, event, priority, created, clip_file, clip_size, clip_sha256,"
    " clip_content_type, keyframe_file, keyframe_size, keyframe_sha256, clip_evicted,"
    " upload_id, acked_bytes, attempts"
)


def _chunks(src: str | os.PathLike[str] | bytes) -> Iterator[bytes]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        yield bytes(src)
        return
    with open(src, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            yield chunk
