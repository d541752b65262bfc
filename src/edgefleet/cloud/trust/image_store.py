"""The image repository's metadata in the database, shared by every controller replica.

``DatabaseImageStore`` is a ``registry.tuf.MetadataStore`` for ``ImageRepository``: the
online roles (top-level targets, hash bins, snapshot, timestamp) and the release counter
live in ``image_metadata`` / ``image_head`` (``image_tables``); root stays in the data
dir's files (``files``). The repository code signs exactly as it does on files; only where
the bytes go changes.

A signer (any replica) works inside ``writing(session)``, one transaction per push:

1. the head row is created if missing — importing, once, the current file-based metadata an
   older controller signed (so versions continue above what devices trust) — then locked
   (``SELECT … FOR UPDATE``: a second replica waits for the first to commit, then reads the
   versions it signed and signs above them);
2. the repository reads the current metadata through the transaction and writes the new
   versions: plain INSERTs, so a version signed twice is refused by the primary key;
   the signing thread keeps reading through that transaction until it ends;
3. the transaction commits (the caller's, when one is passed). If it rolls back instead,
   ``on_abort`` callbacks drop what the repository cached from the signing.

Reads outside a transaction (``/tuf/image/metadata/…``, ``get_target``) use a short session
of their own and see what has committed; before the import they read the files.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, event, insert
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from ...registry.tuf import MetadataStore, RepositoryStateError
from ...registry.tuf.store import check_store_name
from .director_store import _insert_ignore
from .image_tables import HEAD_ID, KEEP_TIMESTAMPS, ImageHead, ImageMetadata

_HEAD = ImageHead.__table__  # type: ignore[attr-defined]
_META = ImageMetadata.__table__  # type: ignore[attr-defined]
_VERSIONED = re.compile(r"^([1-9][0-9]{0,9})\.([A-Za-z0-9_\-]{1,32})\.json$")
COUNTER_FILE = "release-counter.json"
TIMESTAMP_FILE = "timestamp.json"


def _signed_fields(data: bytes) -> tuple[int, datetime | None]:
    signed = json.loads(data)["signed"]
    expires = datetime.fromisoformat(str(signed["expires"]).replace("Z", "+00:00"))
    return int(signed["version"]), expires.astimezone(timezone.utc)


class DatabaseImageStore:
    """Args:
        engine: the controller's database.
        files: the data dir's metadata store (root, and what an older controller signed).
        prefix: the image repository's prefix in store names (``image``).
    """

    def __init__(self, engine: Engine, files: MetadataStore, prefix: str = "image"):
        self.engine = engine
        self.files = files
        self.prefix = prefix.strip("/")
        self.on_abort: list[Callable[[], None]] = []
        self._local = threading.local()
        self._head_seen = False

    # -- names ------------------------------------------------------------------------

    def _key(self, name: str) -> tuple[str, int | None] | None:
        """(role, version) for a name kept in the database (version None: the current
        timestamp, or the release counter); None for root and anything else (files)."""
        check_store_name(name)
        base, _, fname = name.rpartition("/")
        if base != self.prefix:
            return None
        if fname == TIMESTAMP_FILE:
            return "timestamp", None
        if fname == COUNTER_FILE:
            return "counter", None
        m = _VERSIONED.match(fname)
        if m is None or m.group(2) == "root":
            return None
        return m.group(2), int(m.group(1))

    # -- sessions ---------------------------------------------------------------------

    def _current(self) -> Session | None:
        return getattr(self._local, "session", None)

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        s = self._current()
        if s is not None:
            yield s
            return
        with Session(self.engine) as s:
            yield s

    def _has_head(self, s: Session) -> bool:
        if not self._head_seen:  # once there, the head row never goes away
            self._head_seen = s.execute(sa_select(_HEAD.c.repo).where(_HEAD.c.repo == HEAD_ID)).first() is not None
        return self._head_seen

    # -- MetadataStore ----------------------------------------------------------------

    def read(self, name: str) -> bytes:
        """Raises FileNotFoundError if absent."""
        key = self._key(name)
        if key is None:
            return self.files.read(name)
        with self._reading() as s:
            if not self._has_head(s):
                return self.files.read(name)  # not imported yet: what the files hold
            role, version = key
            if role == "counter":
                got = s.execute(sa_select(_HEAD.c.release_counter).where(_HEAD.c.repo == HEAD_ID)).scalar_one()
                return json.dumps({"release_counter": int(got)}).encode()
            q = sa_select(_META.c.data).where(_META.c.role == role)
            q = q.order_by(_META.c.version.desc()).limit(1) if version is None else q.where(_META.c.version == version)
            data = s.execute(q).scalar()
        if data is None:
            raise FileNotFoundError(name)
        return bytes(data)

    def exists(self, name: str) -> bool:
        try:
            self.read(name)
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        names = set(self.files.list(prefix)) if prefix != self.prefix else {
            n for n in self.files.list(prefix) if self._key(n) is None}
        if prefix == self.prefix:
            with self._reading() as s:
                for role, version in s.execute(sa_select(_META.c.role, _META.c.version)).all():
                    names.add(f"{self.prefix}/{version}.{role}.json")
        return sorted(names)

    def write(self, name: str, data: bytes) -> None:
        """Root goes to the files; everything else is one row, inside ``writing``.

        Raises:
            RepositoryStateError: written outside ``writing``.
            sqlalchemy.exc.IntegrityError: that version exists already (roll back).
        """
        key = self._key(name)
        if key is None:
            self.files.write(name, data)
            return
        s = self._current()
        if s is None:
            raise RepositoryStateError(f"{name}: image metadata is written only inside a locked transaction")
        role, version = key
        now = datetime.now(timezone.utc)
        head = _HEAD.update().where(_HEAD.c.repo == HEAD_ID)
        if role == "counter":
            s.execute(head.values(release_counter=int(json.loads(data)["release_counter"]), updated_at=now))
            return
        signed_version, expires = _signed_fields(data)
        if version is not None and version != signed_version:
            raise RepositoryStateError(f"{name} carries version {signed_version}")
        s.execute(insert(_META).values(role=role, version=signed_version, data=data, created_at=now))
        if role == "snapshot":
            s.execute(head.values(snapshot_version=signed_version, snapshot_expires=expires, updated_at=now))
        elif role == "timestamp":
            s.execute(head.values(timestamp_version=signed_version, timestamp_expires=expires, updated_at=now))
            s.execute(delete(_META).where(_META.c.role == "timestamp")
                      .where(_META.c.version <= signed_version - KEEP_TIMESTAMPS))

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def writing(self, session: Session | None = None) -> Iterator[Session]:
        """Lock the image head row for one signing transaction (nested calls join it).

        With ``session`` the caller's transaction is used and the caller commits (the push
        and its signed metadata commit together); until it does, this thread reads the image
        metadata through that session (the director, signing in the same transaction, sees
        the target it just released). Without, this commits on success.
        """
        current = self._current()
        if current is not None:
            yield current
            return
        own = session is None
        s = Session(self.engine, expire_on_commit=False) if session is None else session
        try:
            self.import_files(s)
            s.execute(sa_select(_HEAD.c.repo).where(_HEAD.c.repo == HEAD_ID).with_for_update())
            if not own:
                self._watch(s)
            self._local.session = s
            yield s
            if own:
                self._local.session = None
                s.commit()
        except BaseException:
            self._local.session = None
            if own:
                s.rollback()
            self._abort()
            raise
        finally:
            if own:
                s.close()

    def _abort(self) -> None:
        self._head_seen = False  # an import rolled back with the rest
        for cb in self.on_abort:
            cb()

    def _watch(self, s: Session) -> None:
        """Call ``on_abort`` if the caller's transaction ends without a commit."""
        state = {"committed": False, "done": False}
        local = self._local

        def committed(_s: Session) -> None:
            state["committed"] = True

        def ended(_s: Session, transaction: Any) -> None:
            if transaction.parent is None and not state["done"]:
                state["done"] = True
                if getattr(local, "session", None) is _s:
                    local.session = None
                if not state["committed"]:
                    self._abort()

        event.listen(s, "after_commit", committed)
        event.listen(s, "after_transaction_end", ended)

    # -- upgrade in place -------------------------------------------------------------

    def import_files(self, session: Session) -> bool:
        """Create the head row from the current file-based metadata (timestamp, the snapshot
        it names and every targets role that snapshot lists, the release counter) unless a
        head row exists. Idempotent; a replica that imported first wins. Returns whether
        this call imported.

        Raises:
            RepositoryStateError: neither the database nor the files hold a repository.
        """
        if self._has_head(session):
            return False
        docs = self.file_documents()
        ts_version, ts_expires = _signed_fields(docs["timestamp"][1])
        snap_version, snap_expires = _signed_fields(docs["snapshot"][1])
        try:
            counter = int(json.loads(self.files.read(f"{self.prefix}/{COUNTER_FILE}"))["release_counter"])
        except FileNotFoundError:
            counter = 0
        now = datetime.now(timezone.utc)
        stmt = _insert_ignore(session, ImageHead, ("repo",)).values(  # type: ignore[arg-type]
            repo=HEAD_ID, release_counter=counter, snapshot_version=snap_version, timestamp_version=ts_version,
            snapshot_expires=snap_expires, timestamp_expires=ts_expires, updated_at=now)
        if session.execute(stmt.returning(_HEAD.c.repo)).first() is None:  # another replica imported first
            return False
        session.execute(insert(_META), [{"role": role, "version": v, "data": data, "created_at": now}
                                        for role, (v, data) in docs.items()])
        return True

    def file_documents(self) -> dict[str, tuple[int, bytes]]:
        """role → (version, bytes) of the current file-based metadata.

        Raises:
            RepositoryStateError: no (or an incomplete) file-based image repository.
        """
        try:
            ts = self.files.read(f"{self.prefix}/{TIMESTAMP_FILE}")
            ts_signed = json.loads(ts)["signed"]
            snap_v = int(ts_signed["meta"]["snapshot.json"]["version"])
            snap = self.files.read(f"{self.prefix}/{snap_v}.snapshot.json")
            docs = {"timestamp": (int(ts_signed["version"]), ts), "snapshot": (snap_v, snap)}
            for fname, meta in json.loads(snap)["signed"]["meta"].items():
                role, v = fname.removesuffix(".json"), int(meta["version"])
                docs[role] = (v, self.files.read(f"{self.prefix}/{v}.{role}.json"))
        except (FileNotFoundError, KeyError, ValueError, TypeError) as exc:
            raise RepositoryStateError(f"no image repository to import from the files: {exc}") from None
        return docs


__all__ = ["DatabaseImageStore"]
