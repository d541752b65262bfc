"""The audit log: every control-plane action, hash-chained, periodically signed.

Data flow: a caller (the API's audit dependency, the reconciler on a gate breach, the
``fleet`` CLI for local actions) calls ``append(session, …)`` or ``AuditLog.record(…)``.
``append`` locks the single-row ``audit_head`` (``SELECT … FOR UPDATE`` on PostgreSQL;
on SQLite a first write takes the database's one writer lock), numbers the entry
``head.seq + 1`` and chains it::

    hash = sha256(prev_hash_hex || canonical_json(seq, ts, actor, role, action, target, summary))

so two API threads or two controller replicas never fork the chain. Every ``N`` entries
(default 1000) or ``T`` minutes (default 10) an ``AuditAnchor`` row signs ``(seq, hash)``
with an online Ed25519 key (``<data_dir>/keys/audit-ed25519.pem``, 0600, created on first
use); each anchor names the one before it, so a deleted anchor is noticed too.

``verify(session, keys)`` walks the chain in ``seq`` order a page at a time (never the
whole table in memory) and reports each break with its seq and kind: ``edited`` (an
entry's hash does not match its fields), ``deleted`` (a gap in seq), ``reordered`` (an
entry sits at another position than the one it was chained at), ``truncated`` (entries
missing at the tail: fewer than the head or a signed anchor says) and ``anchor`` (a
signature that does not verify, an unknown key, an anchor missing from the anchor chain).
Summaries never hold secrets: ``redact`` replaces token, password and key fields.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import JSON, Column, Text, cast, update
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, Session, SQLModel, col, select

from ..protocols import fast_json
from .errors import CloudError

_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
GENESIS = "0" * 64
KEY_FILE = "audit-ed25519.pem"
KINDS = ("edited", "deleted", "reordered", "truncated", "anchor")
_PAGE = 5000


class AuditError(CloudError):
    """The audit log cannot be written or read (bad key file, bad filter)."""


# ----- tables -----------------------------------------------------------------------------


class _SummaryJSON(TypeDecorator):  # type: ignore[type-arg]
    """The summary column, stored as its ``canonical_text`` (what ``verify`` hashes as it is).

    An engine of ``db.make_engine`` writes JSON columns compactly (``fast_json``); this
    column hands it the canonical text as an ``orjson.Fragment``, written unchanged. Any
    other engine writes ``json.dumps`` of the summary, whose keys are already sorted: the
    same text."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is not None and getattr(dialect, "_json_serializer", None) is fast_json.dumps_column:
            return orjson.Fragment(canonical_text(value))
        return value


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    ts: datetime = Field(index=True)
    actor: str = Field(max_length=128, index=True)
    role: str = Field(max_length=16)
    action: str = Field(max_length=64, index=True)
    target: str = Field(default="", max_length=256)
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(_SummaryJSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, index=True)


class AuditHead(SQLModel, table=True):
    """One row (id 1): the newest entry and the newest anchor. Appends lock it."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int = 0
    hash: str = Field(default=GENESIS, max_length=64)
    anchor_seq: int = 0
    anchor_at: datetime | None = None


class AuditAnchor(SQLModel, table=True):
    __tablename__ = "audit_anchor"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: str = Field(max_length=64)
    ts: datetime
    prev_seq: int = 0
    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=256)


# ----- canonical form and hashing (pure) ------------------------------------------------------


def ts_text(ts: datetime) -> str:
    """The one text form of a time that is hashed: UTC, microseconds, ``Z``."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_text(value: Any) -> str:
    """``json.dumps(value, sort_keys=True)``: keys sorted at every level, ASCII only.

    A summary is stored as exactly this text (the JSON column writes ``json.dumps`` of a
    dict whose keys are already sorted), so ``verify`` can hash the stored text as it is.
    """
    return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False)


def canonical(value: Any) -> bytes:
    return canonical_text(value).encode("ascii")


def entry_text(seq: int, ts: str, actor: str, role: str, action: str, target: str, summary_text: str) -> str:
    """``canonical_text`` of the entry's fields, with the summary given as canonical text."""
    q = _quote
    return (f'{{"action": {q(action)}, "actor": {q(actor)}, "role": {q(role)}, "seq": {int(seq)}, '
            f'"summary": {summary_text}, "target": {q(target)}, "ts": {q(ts)}}}')


def entry_bytes(seq: int, ts: str, actor: str, role: str, action: str, target: str,
                summary: Mapping[str, Any]) -> bytes:
    """What is hashed: the canonical JSON of (seq, ts, actor, role, action, target, summary)."""
    return entry_text(seq, ts, actor, role, action, target, canonical_text(summary)).encode("ascii")


def chain_hash(prev_hash: str, data: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + data).hexdigest()


def anchor_message(seq: int, entry_hash: str, prev_seq: int, ts: str) -> bytes:
    return f"edgefleet-audit-anchor/1\n{seq}\n{entry_hash}\n{prev_seq}\n{ts}\n".encode()


# ----- summaries without secrets ---------------------------------------------------------------

_SECRET_KEY = re.compile(r"token|passw|secret|private|credential|api[_-]?key|^key$|_key$|cookie|"
                         r"authori[sz]ation|signature|pem$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"^(efk|efd)_|-----BEGIN ")
REDACTED = "[redacted]"
MAX_SUMMARY_BYTES = 4096


def redact(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe, bounded copy of ``value`` with secret-looking fields replaced."""
    if depth > 4:
        return "…"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= 40:
                out["…"] = f"{len(value) - 40} more fields"
                break
            key = str(k)[:64]
            out[key] = REDACTED if _SECRET_KEY.search(key) else redact(v, depth=depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        head = [redact(v, depth=depth + 1) for v in items[:20]]
        return head + ([f"… {len(items) - 20} more"] if len(items) > 20 else [])
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if _SECRET_VALUE.search(text):
        return REDACTED
    return text if len(text) <= 256 else text[:255] + "…"


def bounded_summary(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    clean = redact(dict(summary or {}))
    if len(canonical(clean)) > MAX_SUMMARY_BYTES:
        clean = {"truncated": True, "fields": sorted(clean)[:40]}
    return json.loads(canonical(clean))  # exactly what reading it back gives


# ----- the online signing key --------------------------------------------------------------


class AuditSigner:
    """The Ed25519 key that signs anchors. ``key_id``: sha256 of the raw public key, 16 hex."""

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key
        self.public_key = key.public_key()
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def open(cls, keys_dir: Path, *, create: bool = True) -> AuditSigner | None:
        """The key in ``keys_dir/audit-ed25519.pem``; made (0600) when absent and ``create``.

        Raises:
            AuditError: the file exists but is not an Ed25519 private key.
        """
        path = keys_dir / KEY_FILE
        if not path.exists():
            if not create:
                return None
            _write_new_key(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise AuditError(f"{path} is not a usable private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError(f"{path} is not an Ed25519 key")
        return cls(key)

    def sign(self, message: bytes) -> str:
        return self._key.sign(message).hex()

    def keys(self) -> dict[str, Ed25519PublicKey]:
        return {self.key_id: self.public_key}


def _write_new_key(path: Path) -> None:
    """Write a new key atomically, never replacing one another process made meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-key-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)  # fails if it exists: the first writer wins
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


# ----- appending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorPolicy:
    every: int = 1000
    interval: timedelta = timedelta(minutes=10)

    def due(self, head: AuditHead, seq: int, now: datetime) -> bool:
        if seq - head.anchor_seq >= self.every or head.anchor_at is None:
            return True
        last = head.anchor_at if head.anchor_at.tzinfo else head.anchor_at.replace(tzinfo=timezone.utc)
        return now - last >= self.interval


def _lock_head(session: Session) -> AuditHead:
    if session.get_bind().dialect.name == "postgresql":
        stmt = select(AuditHead).where(AuditHead.id == 1).with_for_update()
    else:  # a write first: SQLite's writer lock is held from here to the commit
        session.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=AuditHead.seq))
        stmt = select(AuditHead).where(AuditHead.id == 1)
    head = session.exec(stmt.execution_options(populate_existing=True)).first()
    if head is None:  # the migration inserts it; a hand-made schema might not have
        head = AuditHead(id=1)
        session.add(head)
        session.flush()
    return head


def append(session: Session, *, actor: str, role: str, action: str, target: str = "",
           summary: Mapping[str, Any] | None = None, now: datetime | None = None,
           signer: AuditSigner | None = None, policy: AnchorPolicy = AnchorPolicy()) -> AuditEntry:
    """Append one entry in ``session``'s transaction (the caller commits).

    Without ``signer`` the entry is chained but the anchor waits for the next signed append.
    """
    now = now or datetime.now(timezone.utc)
    now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    head = _lock_head(session)
    seq = head.seq + 1
    fields: dict[str, Any] = dict(actor=str(actor)[:128], role=str(role)[:16], action=str(action)[:64],
                                  target=str(target)[:256],
                                  summary=bounded_summary(summary))
    ts = datetime.fromisoformat(ts_text(now).replace("Z", "+00:00"))
    digest = chain_hash(head.hash, entry_bytes(seq, ts_text(ts), **fields))
    entry = AuditEntry(seq=seq, ts=ts, prev_hash=head.hash, hash=digest, **fields)
    session.add(entry)
    head.seq, head.hash = seq, digest
    if signer is not None and policy.due(head, seq, now):
        session.add(make_anchor(signer, seq, digest, head.anchor_seq, now))
        head.anchor_seq, head.anchor_at = seq, now
    session.add(head)
    session.flush()
    return entry


def make_anchor(signer: AuditSigner, seq: int, entry_hash: str, prev_seq: int, now: datetime) -> AuditAnchor:
    ts = datetime.fromisoformat(ts_text(now).replace("Z", "+00:00"))
    sig = signer.sign(anchor_message(seq, entry_hash, prev_seq, ts_text(ts)))
    return AuditAnchor(seq=seq, hash=entry_hash, ts=ts, prev_seq=prev_seq, key_id=signer.key_id, signature=sig)


class AuditLog:
    """The audit log of one database, with its signing key: ``record`` in its own transaction."""

    def __init__(self, engine: Engine, signer: AuditSigner | None, policy: AnchorPolicy = AnchorPolicy()):
        self.engine, self.signer, self.policy = engine, signer, policy

    @classmethod
    def open(cls, engine: Engine, data_dir: Path, policy: AnchorPolicy = AnchorPolicy()) -> AuditLog:
        return cls(engine, AuditSigner.open(data_dir / "keys"), policy)

    def record(self, *, actor: str, role: str, action: str, target: str = "",
               summary: Mapping[str, Any] | None = None, now: datetime | None = None) -> AuditEntry:
        with Session(self.engine, expire_on_commit=False) as s:
            entry = self.append(s, actor=actor, role=role, action=action, target=target, summary=summary, now=now)
            s.commit()
            return entry

    def append(self, session: Session, **fields: Any) -> AuditEntry:
        return append(session, signer=self.signer, policy=self.policy, **fields)

    def verify(self) -> VerifyReport:
        with Session(self.engine) as s:
            return verify(s, self.signer.keys() if self.signer else {})


def for_controller(controller: Any) -> AuditLog:
    """The controller's audit log (made once, kept on the controller)."""
    log = getattr(controller, "_audit_log", None)
    if log is None:
        log = AuditLog.open(controller.engine, controller.settings.data_dir)
        controller._audit_log = log
    return log  # type: ignore[no-any-return]


def record_gate_breach(session: Session, rollout_id: str, action: Any, on_breach: str, publisher: Any) -> None:
    """The reconciler's own pause or rollback on a broken gate, in the pass's transaction.

    ``action`` is the plan's ``RecordGateResults``; nothing is recorded unless it breached.
    """
    if getattr(action, "outcome", None) != "breached":
        return
    log = for_controller(publisher) if hasattr(publisher, "settings") and hasattr(publisher, "engine") else None
    failed = [f"{r.metric}: {r.reason}" for r in action.results if r.status == "failed"]
    fields: dict[str, Any] = dict(actor="reconciler", role="system", target=rollout_id,
                  action="rollout.auto_rollback" if on_breach == "rollback" else "rollout.auto_pause",
                  summary={"wave": action.wave + 1, "gates_failed": failed},  # 1-based, as shown
                  now=datetime.fromtimestamp(action.at, timezone.utc))
    if log is not None:
        log.append(session, **fields)
    else:
        append(session, **fields)


def local_actor() -> str:
    """Who runs a local command (``fleet keys init``, ``fleet cloud init``): the OS user."""
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (containers)
        return f"uid-{os.getuid()}"


def record_local(settings: Any, action: str, target: str = "", summary: Mapping[str, Any] | None = None,
                 *, engine: Engine | None = None) -> AuditEntry:
    """Record a local CLI action, actor the OS user; migrates the database if it is new."""
    from .db import make_engine, migrate

    own = engine is None
    engine = engine or make_engine(settings.db_url)
    try:
        if own:
            migrate(engine)
        return AuditLog.open(engine, settings.data_dir).record(
            actor=local_actor(), role="local", action=action, target=target, summary=summary)
    finally:
        if own:
            engine.dispose()


# ----- reading ---------------------------------------------------------------------------------


def list_entries(session: Session, *, actor: str | None = None, action: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 limit: int = 100, offset: int = 0, newest_first: bool = True) -> list[AuditEntry]:
    """Entries matching every filter given: ``action`` is a prefix (``rollout.`` …)."""
    q = _filtered(select(AuditEntry), actor=actor, action=action, since=since, until=until)
    order = col(AuditEntry.seq).desc() if newest_first else col(AuditEntry.seq)
    return list(session.exec(q.order_by(order).offset(max(0, offset)).limit(max(1, min(limit, 1000)))).all())


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    return {"seq": e.seq, "ts": ts_text(e.ts), "actor": e.actor, "role": e.role, "action": e.action,
            "target": e.target, "summary": e.summary, "prev_hash": e.prev_hash, "hash": e.hash}


def export_lines(session: Session, **filters: Any) -> Iterator[str]:
    """Every matching entry, oldest first, one JSON object per line (a page at a time)."""
    after = 0
    while True:
        q = select(AuditEntry).where(col(AuditEntry.seq) > after)
        page = list(session.exec(_filtered(q, **filters).order_by(col(AuditEntry.seq)).limit(_PAGE)).all())
        for e in page:
            yield json.dumps(entry_dict(e), ensure_ascii=False) + "\n"
        if len(page) < _PAGE:
            return
        after = page[-1].seq


def _filtered(q: Any, *, actor: str | None = None, action: str | None = None,
              since: datetime | None = None, until: datetime | None = None) -> Any:
    if actor:
        q = q.where(AuditEntry.actor == actor)
    if action:
        q = q.where(col(AuditEntry.action).startswith(action, autoescape=True))
    if since:
        q = q.where(col(AuditEntry.ts) >= since)
    if until:
        q = q.where(col(AuditEntry.ts) < until)
    return q


# ----- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # one of KINDS
    detail: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.kind} — {self.detail}"


@dataclass
class VerifyReport:
    entries: int = 0
    head_seq: int = 0
    anchors: int = 0
    last_anchor_seq: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        first = self.first
        return {"ok": self.ok, "entries": self.entries, "head_seq": self.head_seq, "anchors": self.anchors,
                "last_anchor_seq": self.last_anchor_seq,
                "first_broken_seq": first.seq if first else None, "kind": first.kind if first else None,
                "problems": [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in self.problems]}


def _sqlite_ts_text(raw: Any) -> str:
    """SQLite keeps times as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC): rewrite, do not parse."""
    if isinstance(raw, str) and len(raw) == 26 and raw[10] == " " and raw[19] == ".":
        return f"{raw[:10]}T{raw[11:]}Z"
    return ts_text(raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw)))


def _rows(session: Session, upto: int) -> Iterator[tuple[Any, ...]]:
    """(seq, ts text, actor, role, action, target, summary text, prev_hash, hash), in seq order.

    The summary comes as the stored JSON text and, on SQLite, the time as its stored text:
    nothing is parsed on the way (``verify`` touches every entry).
    """
    sqlite = session.get_bind().dialect.name == "sqlite"
    ts_col: Any = cast(AuditEntry.ts, Text) if sqlite else AuditEntry.ts
    to_text = _sqlite_ts_text if sqlite else ts_text
    cols: tuple[Any, ...] = (AuditEntry.seq, ts_col, AuditEntry.actor, AuditEntry.role, AuditEntry.action, AuditEntry.target,
            cast(AuditEntry.summary, Text), AuditEntry.prev_hash, AuditEntry.hash)
    conn, after = session.connection(), 0
    while True:
        page = conn.execute(select(*cols).where(col(AuditEntry.seq) > after, col(AuditEntry.seq) <= upto)
                            .order_by(col(AuditEntry.seq)).limit(_PAGE)).all()
        for seq, ts, actor, role, action, target, summary, prev_hash, stored in page:
            yield seq, to_text(ts), actor, role, action, target, summary, prev_hash, stored
        if len(page) < _PAGE:
            return
        after = page[-1][0]


def _anchors(session: Session) -> Iterator[AuditAnchor]:
    after = -1
    while True:
        page = list(session.exec(select(AuditAnchor).where(col(AuditAnchor.seq) > after)
                                 .order_by(col(AuditAnchor.seq)).limit(_PAGE)).all())
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].seq


def _hash(prev_hash: str, seq: int, fields: tuple[Any, ...]) -> str:
    return hashlib.sha256((prev_hash + entry_text(seq, *fields)).encode("utf-8", "surrogateescape")).hexdigest()


def _recanonical(summary_text: Any) -> str:
    try:
        return canonical_text(json.loads(summary_text) if isinstance(summary_text, str) else summary_text)
    except (ValueError, TypeError):
        return str(summary_text)


class _Walk:
    """The state of one verification pass (see ``verify``)."""

    def __init__(self, session: Session, keys: Mapping[str, Ed25519PublicKey], report: VerifyReport,
                 max_problems: int):
        self.session, self.keys, self.report, self.max = session, keys, report, max_problems
        self.prev_seq, self.prev_hash, self.prev_ok = 0, GENESIS, True
        self.anchor_prev = 0

    def problem(self, seq: int, kind: str, detail: str) -> None:
        if len(self.report.problems) < self.max:
            self.report.problems.append(Problem(seq, kind, detail))

    def seq_of_hash(self, column: Any, value: str) -> int | None:
        if column is AuditEntry.hash and value == GENESIS:
            return 0
        return self.session.execute(select(AuditEntry.seq).where(col(column) == value).limit(1)).scalar()

    def row(self, r: tuple[Any, ...]) -> None:
        seq, ts, actor, role, action, target, summary, prev_hash, stored = r
        fields = (ts, actor, role, action, target, summary)
        ok = _hash(prev_hash, seq, fields) == stored
        if not ok:  # the stored text may differ in form only (spaces, key order): compare the content
            fields = (ts, actor, role, action, target, _recanonical(summary))
            ok = _hash(prev_hash, seq, fields) == stored
        expected = self.prev_seq + 1
        gap = seq > expected
        if gap:
            self.problem(expected, "deleted", f"entries {expected}..{seq - 1} are missing (seq gap)"
                         if seq - 1 > expected else f"entry {expected} is missing (seq gap)")
        if not ok:
            self._classify_mismatch(seq, fields, prev_hash, stored)
        elif prev_hash != self.prev_hash and not gap and self.prev_ok:
            origin = self.seq_of_hash(AuditEntry.hash, prev_hash)
            if origin is not None:
                self.problem(seq, "reordered", f"chained after entry {origin}, found after entry {self.prev_seq}")
            else:
                self.problem(self.prev_seq, "edited",
                             f"entry {self.prev_seq} was rewritten (its hash is not the one entry {seq} chains to)")
        self.prev_ok = ok and (prev_hash == self.prev_hash or gap)
        self.prev_seq, self.prev_hash = seq, stored
        self.report.entries += 1

    def _classify_mismatch(self, seq: int, fields: tuple[Any, ...], prev_hash: str, stored: str) -> None:
        """A row whose hash does not match: moved here from elsewhere, or edited."""
        candidates: list[int] = [seq + 1]  # renumbered after a deletion
        before = self.seq_of_hash(AuditEntry.hash, prev_hash)
        if before is not None:
            candidates.append(before + 1)
        after = self.seq_of_hash(AuditEntry.prev_hash, stored)
        if after is not None:
            candidates.append(after - 1)
        for original in dict.fromkeys(c for c in candidates if c != seq and c > 0):
            if _hash(prev_hash, original, fields) == stored:
                if original == seq + 1 and before is None:
                    self.problem(seq, "deleted", f"entry {seq} is missing: the entries after it were renumbered")
                else:
                    self.problem(seq, "reordered", f"this entry was written as entry {original}")
                return
        self.problem(seq, "edited", "the entry's fields do not match its hash")

    def anchor(self, a: AuditAnchor, entry_hash: str | None) -> None:
        self.report.anchors += 1
        self.report.last_anchor_seq = a.seq
        key = self.keys.get(a.key_id)
        if key is None:
            self.problem(a.seq, "anchor", f"anchor signed by unknown key {a.key_id}")
        else:
            try:
                key.verify(bytes.fromhex(a.signature), anchor_message(a.seq, a.hash, a.prev_seq, ts_text(a.ts)))
            except (InvalidSignature, ValueError):
                self.problem(a.seq, "anchor", f"anchor signature does not verify (key {a.key_id})")
        if a.prev_seq != self.anchor_prev:
            self.problem(a.seq, "anchor", f"anchor names {a.prev_seq} as the anchor before it, "
                                          f"but that was {self.anchor_prev} (an anchor was removed)")
        self.anchor_prev = a.seq
        if entry_hash is not None and entry_hash != a.hash:
            self.problem(a.seq, "edited", "the entry differs from the signed anchor: entries up to it were "
                                          "rewritten and re-hashed")


def verify(session: Session, keys: Mapping[str, Ed25519PublicKey], *, max_problems: int = 100) -> VerifyReport:
    """Walk the chain and its anchors in seq order; see the module docstring for the kinds."""
    head = session.get(AuditHead, 1) or AuditHead(id=1)
    report = VerifyReport(head_seq=head.seq)
    walk = _Walk(session, keys, report, max_problems)
    anchors = _anchors(session)
    pending = next(anchors, None)
    at = pending.seq if pending is not None else -1  # the next anchor's seq (a plain int: checked per row)
    for r in _rows(session, head.seq):
        while pending is not None and at < r[0]:  # its entry is gone: reported as a gap
            walk.anchor(pending, None)
            pending = next(anchors, None)
            at = pending.seq if pending is not None else -1
        walk.row(r)
        if at == r[0] and pending is not None:
            walk.anchor(pending, r[-1])
            pending = next(anchors, None)
            at = pending.seq if pending is not None else -1
    last = walk.prev_seq
    if last < head.seq:
        walk.problem(last + 1, "truncated", f"entries {last + 1}..{head.seq} are missing at the tail "
                                            f"(the head says {head.seq})")
    elif walk.prev_hash != head.hash and walk.prev_ok:
        walk.problem(last, "edited", "the newest entry's hash is not the head's")
    beyond = None
    while pending is not None:
        beyond = beyond or pending.seq
        walk.anchor(pending, None)
        pending = next(anchors, None)
    if beyond is not None:
        walk.problem(max(last, head.seq) + 1, "truncated",
                     f"a signed anchor covers entry {beyond}, past the head {head.seq}: the tail was cut")
    if head.anchor_seq and report.last_anchor_seq < head.anchor_seq:
        walk.problem(head.anchor_seq, "anchor", f"the head names anchor {head.anchor_seq}; it is missing")
    report.problems.sort(key=lambda p: p.seq)
    return report
