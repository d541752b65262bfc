"""Resumable upload sessions staged on local disk, verified, then put into a ``BlobStore``.

Flow: ``create`` (open or re-open the session for one device event) → ``write`` (one chunk
of one part at the current offset) → ``complete`` (check sizes and sha256, put the parts
into the blob store, hand a ``StoredClip`` to ``on_clip_stored``, mark the session done).

Layout under ``staging_dir``: ``<upload_id>/session.json`` (written atomically) plus
``clip.part`` / ``keyframe.part``. The offset in ``session.json`` is only advanced after the
chunk's bytes are fsynced, so a crash never acknowledges bytes that are not on disk.

Upload ids are derived from (device id, event id): re-creating the same event finds the
same session, which makes ``create`` idempotent and lets a device that lost its upload id
resume. Each device has a quota of open sessions (``max_open_sessions``, and
``max_open_bytes`` of declared sizes): a new session past it is refused with
``QuotaExceeded`` (429); completing a session frees its share, and a session idle for
``stale_open_s`` no longer counts (it is removed when its device needs the room). The
quota index is kept in memory, rebuilt from ``staging_dir`` on start (per replica). Nothing here touches a stored blob before the digest is verified, and the blob
store is write-once, so a malformed or hostile request cannot harm a stored clip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgefleet.protocols import Event, InvalidPayload, PayloadTooLarge, decode
from edgefleet.registry import BlobStore, DigestMismatch, RegistryError

from ...atomicio import atomic_write
from .errors import (
    ContentDigestMismatch,
    EventConflict,
    Forbidden,
    Incomplete,
    Malformed,
    OffsetMismatch,
    QuotaExceeded,
    TooLarge,
    UploadNotFound,
    UploadStorageError,
)
from .models import CLIP_CONTENT_TYPES, PARTS, CreateUpload, PartSpec, StoredClip, UploadStatus

MiB = 1024 * 1024
_HASH_CHUNK = 1024 * 1024
_LOCK_STRIPES = 64


@dataclass(frozen=True)
class UploadLimits:
    max_clip_bytes: int = 64 * MiB
    max_keyframe_bytes: int = 4 * MiB
    max_event_bytes: int = 16 * 1024
    max_chunk_bytes: int = 8 * MiB
    max_open_sessions: int = 8  # per device
    max_open_bytes: int = 512 * MiB  # declared clip + keyframe bytes of a device's open sessions
    stale_open_s: float = 3600.0  # an open session idle this long stops counting

    def part_max(self, part: str) -> int:
        return self.max_clip_bytes if part == "clip" else self.max_keyframe_bytes


def upload_id_for(device_id: str, event_id: str) -> str:
    return hashlib.sha256(f"{device_id}\0{event_id}".encode()).hexdigest()[:32]


def _declared_bytes(declared: dict[str, Any]) -> int:
    return sum(int(spec["size"]) for spec in declared.values() if spec is not None)


def _sha256_prefix(path: Path, size: int) -> str:
    h = hashlib.sha256()
    left = size
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(min(_HASH_CHUNK, left))):
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


class UploadStore:
    """Upload sessions in ``staging_dir``; verified parts go to ``blob_store``.

    Thread-safe: operations on one session are serialised by a striped lock. Several
    controller replicas must share ``staging_dir`` (or route a device to one replica).
    """

    def __init__(
        self,
        staging_dir: str | os.PathLike[str],
        blob_store: BlobStore,
        on_clip_stored: Callable[[StoredClip], None],
        *,
        limits: UploadLimits | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.root = Path(staging_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blob_store = blob_store
        self.on_clip_stored = on_clip_stored
        self.limits = limits or UploadLimits()
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._quota_lock = threading.Lock()
        self._open: dict[str, dict[str, tuple[int, float]]] = {}  # device → upload id → (bytes, last activity)
        self._load_quota_index()

    # -- public operations -------------------------------------------------------------

    def parse_create(self, device_id: str, body: bytes) -> tuple[CreateUpload, Event]:
        """Validate a create request body for ``device_id``.

        Raises:
            Malformed, TooLarge, Forbidden.
        """
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise Malformed(f"body is not valid JSON: {str(exc)[:200]}") from None
        try:
            req = CreateUpload.model_validate(obj)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ()))
            raise Malformed(f"field '{loc}': {err.get('msg', 'invalid')}") from None
        try:
            event = decode(json.dumps(req.event), Event, max_bytes=self.limits.max_event_bytes)
        except PayloadTooLarge as exc:
            raise TooLarge(f"event: {exc}") from None
        except InvalidPayload as exc:
            raise Malformed(f"event: {exc}") from None
        if event.device_id != device_id:
            raise Forbidden(f"device {device_id!r} may not upload events of {event.device_id!r}")
        for part in PARTS:
            spec: PartSpec | None = getattr(req, part)
            if spec is not None and spec.size > self.limits.part_max(part):
                raise TooLarge(
                    f"{part} of {spec.size} bytes exceeds the limit of {self.limits.part_max(part)}"
                )
        if req.clip is not None and req.clip.content_type not in CLIP_CONTENT_TYPES:
            raise Malformed(f"clip content_type must be one of {', '.join(CLIP_CONTENT_TYPES)}")
        if req.keyframe is not None and req.keyframe.content_type not in (
            "image/jpeg",
            "application/octet-stream",
        ):
            raise Malformed("keyframe content_type must be image/jpeg")
        return req, event

    def create(self, device_id: str, body: bytes) -> UploadStatus:
        """Open the upload for one event, or re-open the existing one (idempotent)."""
        req, event = self.parse_create(device_id, body)
        upload_id = upload_id_for(device_id, event.event_id)
        declared = {
            "clip": req.clip.model_dump() if req.clip else None,
            "keyframe": req.keyframe.model_dump() if req.keyframe else None,
        }
        with self._lock(upload_id):
            session = self._load(upload_id)
            if session is not None:
                if session["state"] == "completed":
                    same = session["declared"] == declared
                    if same or req.clip_evicted or req.clip is None:
                        return self._status(session)
                    raise EventConflict(
                        f"event {event.event_id!r} was already stored with a different clip"
                    )
                if session["declared"] == declared and session["event"] == json.loads(
                    event.model_dump_json(by_alias=True)
                ):
                    self._touch(device_id, upload_id, _declared_bytes(declared))
                    return self._status(session)
            self._reserve(device_id, upload_id, _declared_bytes(declared))  # or QuotaExceeded, nothing changed
            if session is not None:
                shutil.rmtree(self._dir(upload_id), ignore_errors=True)  # re-declared: restart
            session = {
                "upload_id": upload_id,
                "device_id": device_id,
                "event": json.loads(event.model_dump_json(by_alias=True)),
                "declared": declared,
                "clip_evicted": req.clip_evicted,
                "clip_id": uuid.uuid4().hex,
                "state": "open",
                "offsets": {p: 0 for p in PARTS if declared[p] is not None},
                "created_at": time.time(),
                "stored": None,
            }
            try:
                self._save(session, create=True)
            except UploadStorageError:
                self._release(upload_id, device_id)
                raise
            return self._status(session)

    def status(self, device_id: str, upload_id: str) -> UploadStatus:
        with self._lock(upload_id):
            return self._status(self._owned(device_id, upload_id))

    def write(
        self, device_id: str, upload_id: str, part: str, start: int, total: int, data: bytes
    ) -> int:
        """Write one chunk ``data`` at byte ``start`` of ``part``; returns the new offset.

        Raises:
            Malformed: unknown part, wrong total, chunk past the end, completed upload.
            OffsetMismatch: ``start`` is not the current offset (carries it).
        """
        if len(data) > self.limits.max_chunk_bytes:
            raise TooLarge(f"chunk of {len(data)} bytes exceeds {self.limits.max_chunk_bytes}")
        with self._lock(upload_id):
            session = self._owned(device_id, upload_id)
            if session["state"] != "open":
                raise Malformed("upload is already completed")
            spec = session["declared"].get(part)
            if spec is None:
                raise Malformed(f"this upload declared no {part}")
            if total != spec["size"]:
                raise Malformed(f"Content-Range total {total} != declared size {spec['size']}")
            offset = session["offsets"][part]
            if start != offset:
                raise OffsetMismatch(f"chunk starts at {start}, upload is at {offset}", offset=offset)
            if start + len(data) > total or not data:
                raise Malformed("chunk is empty or runs past the declared size")
            path = self._dir(upload_id) / f"{part}.part"
            try:
                with open(path, "r+b" if path.exists() else "w+b") as f:
                    f.seek(start)
                    f.write(data)
                    f.truncate()
                    f.flush()
                    os.fsync(f.fileno())
                session["offsets"][part] = start + len(data)
                self._save(session)
                self._touch(device_id, upload_id, _declared_bytes(session["declared"]))
            except OSError as exc:
                raise UploadStorageError(f"cannot stage chunk: {exc}") from exc
            return session["offsets"][part]

    def complete(self, device_id: str, upload_id: str) -> tuple[UploadStatus, StoredClip | None]:
        """Verify and store the parts, index the clip; idempotent once completed.

        Returns the status and the ``StoredClip`` (None if it was completed earlier).

        Raises:
            Incomplete: a part is missing bytes. ContentDigestMismatch: a part's sha256 is
            wrong (that part restarts at 0). UploadStorageError: the blob store or the
            ``on_clip_stored`` callback failed (retry ``complete``).
        """
        with self._lock(upload_id):
            session = self._owned(device_id, upload_id)
            if session["state"] == "completed":
                return self._status(session), None
            declared = session["declared"]
            missing = {
                p: session["offsets"][p]
                for p in PARTS
                if declared[p] is not None and session["offsets"][p] != declared[p]["size"]
            }
            if missing:
                raise Incomplete(f"parts not fully uploaded: {sorted(missing)}", offsets=missing)
            digests: dict[str, str | None] = {p: None for p in PARTS}
            for part in PARTS:
                spec = declared[part]
                if spec is None:
                    continue
                path = self._dir(upload_id) / f"{part}.part"
                actual = _sha256_prefix(path, spec["size"])
                if actual != spec["sha256"]:
                    session["offsets"][part] = 0
                    path.unlink(missing_ok=True)
                    self._save(session)
                    raise ContentDigestMismatch(
                        f"{part} sha256 is {actual}, declared {spec['sha256']}; resend it",
                        part=part,
                    )
                try:
                    digests[part] = self.blob_store.put_file(path, expected_digest=spec["sha256"])
                except DigestMismatch as exc:  # changed under us: treat as corrupt staging
                    session["offsets"][part] = 0
                    path.unlink(missing_ok=True)
                    self._save(session)
                    raise ContentDigestMismatch(str(exc), part=part) from None
                except (RegistryError, OSError) as exc:
                    raise UploadStorageError(f"blob store failed: {exc}") from exc
            stored = self._stored_clip(session, digests)
            try:
                self.on_clip_stored(stored)
            except Exception as exc:  # the indexer is foreign code: report, keep staging
                raise UploadStorageError(f"indexing the clip failed: {exc}") from exc
            session["state"] = "completed"
            session["stored"] = {"received_at": stored.received_at.isoformat()}
            self._save(session)
            self._release(upload_id, device_id)
            for part in PARTS:
                (self._dir(upload_id) / f"{part}.part").unlink(missing_ok=True)
            return self._status(session), stored

    def expire(self, *, now: float, open_max_age_s: float, completed_max_age_s: float) -> int:
        """Remove stale sessions (abandoned open ones, old completed records); returns count.

        A completed record only serves idempotent re-creates; once removed, a device that
        re-sends the same event starts a fresh upload (and the indexer sees it again).
        """
        removed = 0
        for d in self.root.iterdir():
            if not d.is_dir():
                continue
            with self._lock(d.name):
                session = self._load(d.name)
                if session is None:
                    shutil.rmtree(d, ignore_errors=True)
                    self._release(d.name)
                    removed += 1
                    continue
                age = now - float(session.get("created_at", 0))
                limit = open_max_age_s if session["state"] == "open" else completed_max_age_s
                if age > limit:
                    shutil.rmtree(d, ignore_errors=True)
                    self._release(d.name, session.get("device_id"))
                    removed += 1
        return removed

    def open_sessions(self, device_id: str) -> tuple[int, int]:
        """(count, declared bytes) of the device's open sessions that count against its quota."""
        now = self._now()
        with self._quota_lock:
            live = [b for b, t in self._open.get(device_id, {}).values() if now - t <= self.limits.stale_open_s]
        return len(live), sum(live)

    # -- quota --------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock().timestamp()

    def _load_quota_index(self) -> None:
        for d in self.root.iterdir():
            try:
                session = self._load(d.name) if d.is_dir() else None
            except UploadStorageError:
                continue  # unreadable: expire() removes it
            if session is not None and session.get("state") == "open":
                last = float(session.get("updated_at", session.get("created_at", 0)))
                self._open.setdefault(session["device_id"], {})[d.name] = (_declared_bytes(session["declared"]), last)

    def _reserve(self, device_id: str, upload_id: str, size: int) -> None:
        """Count a new (or re-declared) open session against the device's quota.

        Raises:
            QuotaExceeded: too many open sessions, or too many declared bytes in them.
        """
        now = self._now()
        lim = self.limits
        with self._quota_lock:
            mine = self._open.setdefault(device_id, {})
            stale = [u for u, (_, t) in mine.items() if u != upload_id and now - t > lim.stale_open_s]
            live = {u: v for u, v in mine.items() if u != upload_id and u not in stale}
            count, total = len(live) + 1, sum(b for b, _ in live.values()) + size
            if count > lim.max_open_sessions:
                raise QuotaExceeded(
                    f"device {device_id!r} has {len(live)} open upload sessions; the limit is "
                    f"{lim.max_open_sessions} (upload_max_open_sessions): complete one first",
                    limit="upload_max_open_sessions", open_sessions=len(live),
                )
            if total > lim.max_open_bytes:
                raise QuotaExceeded(
                    f"device {device_id!r} would have {total} bytes in open upload sessions; the limit "
                    f"is {lim.max_open_bytes} (upload_max_open_bytes): complete one first",
                    limit="upload_max_open_bytes", open_bytes=total - size,
                )
            for u in stale:
                del mine[u]
            mine[upload_id] = (size, now)
        held = self._lock(upload_id)  # the caller (create) holds the new session's stripe
        for u in stale:
            self._drop_stale(u, held)

    def _drop_stale(self, upload_id: str, held: threading.Lock | None = None) -> None:
        """Remove an idle open session (its device re-creates it if it ever comes back).
        ``held``: a lock stripe this thread already holds (the session being created): a stale
        session in the same stripe is removed under it, not left behind."""
        lock = self._lock(upload_id)
        own = lock is held
        if not own and not lock.acquire(blocking=False):  # busy: leave it for expire()
            return
        try:
            session = self._load(upload_id)
            if session is not None and session.get("state") == "open":
                shutil.rmtree(self._dir(upload_id), ignore_errors=True)
        except UploadStorageError:
            pass
        finally:
            if not own:
                lock.release()

    def _touch(self, device_id: str, upload_id: str, size: int) -> None:
        with self._quota_lock:
            self._open.setdefault(device_id, {})[upload_id] = (size, self._now())

    def _release(self, upload_id: str, device_id: str | None = None) -> None:
        with self._quota_lock:
            devices = [device_id] if device_id is not None else list(self._open)
            for d in devices:
                mine = self._open.get(d, {})
                if mine.pop(upload_id, None) is not None and not mine:
                    del self._open[d]

    # -- internals ----------------------------------------------------------------------

    def _lock(self, upload_id: str) -> threading.Lock:
        return self._locks[hash(upload_id) % _LOCK_STRIPES]

    def _dir(self, upload_id: str) -> Path:
        return self.root / upload_id

    def _load(self, upload_id: str) -> dict[str, Any] | None:
        if len(upload_id) != 32 or any(c not in "0123456789abcdef" for c in upload_id):
            return None
        try:
            return json.loads((self._dir(upload_id) / "session.json").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UploadStorageError(f"cannot read upload session: {exc}") from exc

    def _save(self, session: dict[str, Any], *, create: bool = False) -> None:
        d = self._dir(session["upload_id"])
        try:
            if create:
                d.mkdir(parents=True, exist_ok=True)
            session["updated_at"] = self._now()
            atomic_write(d / "session.json", json.dumps(session).encode(), temp_prefix=".tmp-")
        except OSError as exc:
            raise UploadStorageError(f"cannot write upload session: {exc}") from exc

    def _owned(self, device_id: str, upload_id: str) -> dict[str, Any]:
        session = self._load(upload_id)
        if session is None:
            raise UploadNotFound(f"no upload {upload_id!r}")
        if session["device_id"] != device_id:
            raise Forbidden(f"upload {upload_id} belongs to another device")
        return session

    def _status(self, session: dict[str, Any]) -> UploadStatus:
        declared = session["declared"]
        return UploadStatus(
            upload_id=session["upload_id"],
            state=session["state"],
            clip_id=session["clip_id"] if session["state"] == "completed" else None,
            offsets=dict(session["offsets"]),
            sizes={p: declared[p]["size"] for p in PARTS if declared[p] is not None},
        )

    def _stored_clip(self, session: dict[str, Any], digests: dict[str, str | None]) -> StoredClip:
        declared = session["declared"]
        clip, keyframe = declared["clip"], declared["keyframe"]
        event = Event.model_validate(session["event"])
        event = event.model_copy(update={"clip_id": session["clip_id"] if clip else None})
        return StoredClip(
            clip_id=session["clip_id"],
            device_id=session["device_id"],
            event=event,
            clip_digest=digests["clip"],
            clip_size=clip["size"] if clip else 0,
            clip_content_type=clip["content_type"] if clip else None,
            keyframe_digest=digests["keyframe"],
            keyframe_size=keyframe["size"] if keyframe else 0,
            received_at=self._clock(),
            upload_id=session["upload_id"],
            clip_evicted=bool(session.get("clip_evicted")),
        )
