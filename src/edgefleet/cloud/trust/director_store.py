"""Director metadata in the database: read what is served, lock and write what is signed.

I/O only; what to sign is decided in ``signing``. A signer (any replica):

1. ``lock_heads(session, ids, seed)`` — creates missing head rows (seeded from the file
   metadata an older controller left, so versions continue above what devices trust),
   then locks every head row in device-id order (``SELECT … FOR UPDATE``; two replicas
   never deadlock on one batch, and the second waits for the first to commit);
2. signs the versions after the locked ones (``registry.tuf.device_meta``);
3. ``write(session, signed, heads)`` — the documents as one multi-row INSERT (the primary
   key (device, role, version) refuses a version signed twice), the heads as one
   executemany UPDATE, older versions pruned; the caller commits once for the batch.

``read`` serves ``/tuf/director/<id>/<file>``: the database first; a device with no head
row yet (metadata signed by a controller before the upgrade) is read from the files
(``Director.metadata``), so an upgraded controller keeps serving every device.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from ...registry.tuf import Director, RepositoryStateError
from ...registry.tuf.device_meta import SignedDevice, Versions, assignment, decode_binding
from .director_tables import KEEP_VERSIONS, DirectorHead, DirectorMetadata

_VERSIONED = re.compile(r"^([1-9][0-9]{0,9})\.(targets|snapshot)\.json$")


@dataclass
class Head:
    """A ``director_head`` row as plain data (thousands per batch: no ORM objects)."""

    device_id: str
    targets_version: int = 0
    snapshot_version: int = 0
    timestamp_version: int = 0
    binding: dict[str, Any] = field(default_factory=dict)
    slots: dict[str, str] = field(default_factory=dict)
    digests: list[str] = field(default_factory=list)
    targets_meta: dict[str, Any] | None = None
    targets_expires: datetime | None = None
    snapshot_expires: datetime | None = None
    timestamp_expires: datetime | None = None

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "updated_at": datetime.now(timezone.utc)}


_HEAD = DirectorHead.__table__  # type: ignore[attr-defined]
_COLUMNS = [_HEAD.c[f.name] for f in fields(Head)]


def versions_of(head: Head) -> Versions:
    return Versions(head.targets_version, head.snapshot_version, head.timestamp_version)


def _select_heads(session: Session, ids: list[str], *, lock: bool) -> dict[str, Head]:
    out: dict[str, Head] = {}
    for i in range(0, len(ids), 500):
        q = sa_select(*_COLUMNS).where(_HEAD.c.device_id.in_(ids[i:i + 500]))
        if lock:
            q = q.order_by(_HEAD.c.device_id).with_for_update()
        for r in session.execute(q).all():
            out[r[0]] = Head(*r)
    return out


def heads(session: Session, device_ids: Iterable[str]) -> dict[str, Head]:
    """The head rows of ``device_ids`` (unlocked; absent: never signed in the database)."""
    return _select_heads(session, sorted(set(device_ids)), lock=False)


def seed_from_files(director: Director, device_id: str) -> Head:
    """A head row for ``device_id`` continuing its file-based metadata (an upgraded
    controller), or an empty one (versions 0) when it has none."""
    try:
        repo = director.device_repo(device_id)
        if not repo.initialised():
            return Head(device_id)
        snap = repo.snapshot().signed
        targets = repo.targets(snapshot=snap).signed
        ts = repo.timestamp().signed
        return Head(
            device_id=device_id, targets_version=targets.version, snapshot_version=snap.version,
            timestamp_version=ts.version, binding=decode_binding(targets), slots=assignment(targets),
            digests=sorted({tf.hashes["sha256"] for tf in targets.targets.values() if "sha256" in tf.hashes}),
            targets_meta=snap.meta["targets.json"].to_dict(), targets_expires=targets.expires,
            snapshot_expires=snap.expires, timestamp_expires=ts.expires)
    except (RepositoryStateError, FileNotFoundError, KeyError, ValueError):
        return Head(device_id)


def lock_heads(session: Session, device_ids: Iterable[str],
               seed: Callable[[str], Head]) -> dict[str, Head]:
    """Create the missing head rows (``seed(id)``), then lock and return every one of them,
    in device-id order. The locks last until the caller's transaction ends."""
    ids = sorted(set(device_ids))
    known: set[str] = set()
    for i in range(0, len(ids), 500):  # which exist: the ids alone (the rows are read below, locked)
        known.update(session.execute(sa_select(_HEAD.c.device_id).where(_HEAD.c.device_id.in_(ids[i:i + 500])))
                     .scalars().all())
    missing = [seed(d).row() for d in ids if d not in known]
    if missing:
        session.execute(_insert_ignore(session, DirectorHead), missing)
    return _select_heads(session, ids, lock=True)


def _insert_ignore(session: Session, table: type[DirectorHead] | type[DirectorMetadata],
                   keys: tuple[str, ...] = ("device_id",)) -> Any:
    """INSERT … ON CONFLICT DO NOTHING (PostgreSQL, SQLite): a row another replica made first stays."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=list(keys))
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(keys))


def import_documents(session: Session, docs: list[tuple[Head, dict[str, tuple[int, bytes]]]]) -> None:
    """Store devices' current file-based documents (role → (version, bytes)) with their heads;
    a device another replica imported first is left as it is."""
    if not docs:
        return
    session.execute(_insert_ignore(session, DirectorHead), [h.row() for h, _ in docs])
    session.execute(_insert_ignore(session, DirectorMetadata, ("device_id", "role", "version")),
                    [{"device_id": h.device_id, "role": role, "version": v, "data": data}
                     for h, files in docs for role, (v, data) in files.items()])


def write(session: Session, signed: list[SignedDevice], new_heads: dict[str, dict[str, Any]]) -> None:
    """Store ``signed`` documents and the heads' new fields (``new_heads[id]``: column →
    value, versions included); prune versions older than the last ``KEEP_VERSIONS``.

    Raises:
        sqlalchemy.exc.IntegrityError: a version of a role was stored already (never
            overwritten: the transaction must be rolled back and the batch signed again).
    """
    if not signed:
        return
    rows = [{"device_id": s.device_id, "role": role, "version": v, "data": data}
            for s in signed for role, (v, data) in s.files().items()]
    session.execute(insert(DirectorMetadata.__table__), rows)  # type: ignore[attr-defined]
    now = datetime.now(timezone.utc)
    fields = sorted({k for h in new_heads.values() for k in h})
    stmt = (update(_HEAD).where(_HEAD.c.device_id == bindparam("b_device_id"))  # Core executemany
            .values({k: bindparam(f"b_{k}") for k in [*fields, "updated_at"]}))
    session.execute(stmt, [{"b_device_id": d, **{f"b_{k}": h.get(k) for k in fields}, "b_updated_at": now}
                           for d, h in new_heads.items()])
    _prune(session, signed)


_META = DirectorMetadata.__table__  # type: ignore[attr-defined]
_PRUNE = delete(_META).where(_META.c.device_id == bindparam("b_device")).where(
    _META.c.role == bindparam("b_role")).where(_META.c.version <= bindparam("b_upto"))


def _prune(session: Session, signed: list[SignedDevice]) -> None:
    by_role: dict[str, list[tuple[str, int]]] = {}
    for s in signed:
        for role, (v, _data) in s.files().items():
            if v > KEEP_VERSIONS:
                by_role.setdefault(role, []).append((s.device_id, v - KEEP_VERSIONS))
    rows = [{"b_device": d, "b_role": role, "b_upto": upto} for role, pairs in by_role.items() for d, upto in pairs]
    if rows:  # one statement, executed per device: each a range of the primary key (device, role, version)
        session.connection().execute(_PRUNE, rows)


def read(session: Session, device_id: str, name: str) -> bytes | None:
    """The bytes of ``name`` (``timestamp.json``, ``N.snapshot.json``, ``N.targets.json``) for
    ``device_id``; None when the database holds nothing for the device (read the files).

    Raises:
        FileNotFoundError: the device is in the database, the file is not.
    """
    if session.get(DirectorHead, device_id) is None:
        return None
    if name == "timestamp.json":
        q = (select(DirectorMetadata.data).where(DirectorMetadata.device_id == device_id)
             .where(DirectorMetadata.role == "timestamp").order_by(col(DirectorMetadata.version).desc()).limit(1))
    else:
        m = _VERSIONED.match(name)
        if m is None:
            raise FileNotFoundError(name)
        q = (select(DirectorMetadata.data).where(DirectorMetadata.device_id == device_id)
             .where(DirectorMetadata.role == m.group(2)).where(DirectorMetadata.version == int(m.group(1))))
    data = session.exec(q).first()
    if data is None:
        raise FileNotFoundError(name)
    return bytes(data)


def latest_targets(session: Session, device_id: str, version: int) -> bytes | None:
    return session.exec(select(DirectorMetadata.data).where(DirectorMetadata.device_id == device_id)
                        .where(DirectorMetadata.role == "targets").where(DirectorMetadata.version == version)).first()


def make_reader(engine: Engine, director: Director) -> Callable[[str, str], bytes]:
    """``(device_id, file name) -> bytes`` for ``TufResolver``: root files from the shared
    root, the device's own files from the database, else from the files of an older controller.

    Raises (from the reader):
        FileNotFoundError: no such file.
    """

    def reader(device_id: str, name: str) -> bytes:
        if name == "root.json" or name.endswith(".root.json"):
            return director.metadata(device_id, name)
        director.device_repo(device_id)  # refuses an invalid id (RepositoryStateError)
        with Session(engine) as s:
            data = read(s, device_id, name)
        return director.metadata(device_id, name) if data is None else data

    return reader


def expiry_summary(session: Session) -> dict[str, dict[str, Any]]:
    """role → {"expires": the earliest expiry over the devices (ISO 8601, Z), "devices": count}."""
    t = _HEAD.c
    row = session.execute(sa_select(func.count(), func.min(t.targets_expires), func.min(t.snapshot_expires),
                                    func.min(t.timestamp_expires)).where(t.targets_version > 0)).one()
    out: dict[str, dict[str, Any]] = {}
    for role, got in zip(("targets", "snapshot", "timestamp"), row[1:], strict=True):
        iso = None
        if got is not None:
            aware = got if got.tzinfo is not None else got.replace(tzinfo=timezone.utc)
            iso = aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        out[role] = {"expires": iso, "devices": int(row[0])}
    return out


def count(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(DirectorHead)).one())


def signed_digests(session: Session, director: Director, device_id: str) -> set[str]:
    """The bundle digests the device's current signed director targets name (database, else
    the files of an older controller)."""
    head = session.get(DirectorHead, device_id)
    if head is not None:
        return set(head.digests)
    return set(seed_from_files(director, device_id).digests)
