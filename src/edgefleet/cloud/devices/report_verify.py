"""Signed device reports, controller side: check a ``reported`` or ``telemetry`` before anything is stored.

``verify_reported`` / ``verify_telemetry`` run first in the controller's handlers, in the
session that then stores the message. In order: the device is enrolled (``ingest.admit``);
the message carries ``seq``, ``key_id`` and ``sig`` (else ``unsigned``); the device has a
registered report key (else ``unknown_key``); ``key_id`` names that key and ``sig`` is its
Ed25519 signature over the message's canonical bytes (else ``bad_signature``); ``seq`` fits
the channel's anti-replay window (``replay_window.place``: above the highest accepted, or
within ``[controller] replay_window`` below it and not accepted yet — else ``replayed``); a
telemetry period does not end in the future and, if its seq is the new highest, starts at or
after the end of the last counted one, or, if it is *late* (below the highest), ends by then
and overlaps no period already counted for the device (``counted_periods``: the telemetry
history, an indexed range query) — else ``overlap``. A refusal raises ``ReportRefused``; the
bridge counts it under its outcome and logs it with the device id.

What a late message changes (a seq below the highest, as when another controller replica
committed the device's newer message first): its bit in the window; a late ``reported``
adds device-history rows for its slots whose phase differs from the current report's
(marked ``late`` with the seq); a late ``telemetry`` adds its telemetry-history row, shadow
pair statistics and rollout member aggregates. Nothing else: the device row (reported state,
generation, hardware claim, agent version, latest telemetry, last seen, online, period
watermark, freshness) stays the newest seq's.

The window advance is a compare-and-set UPDATE on the (highest seq, bitmap) pair read with
the row, so two controller replicas never both accept one seq: the one that finds the pair
moved reads the row again and decides again (``CAS_RETRIES``); the batched ingest
(``devices.batch``) guards its UPDATE the same way and retries the batch.

Key registration: at enrolment (``set_key``, operator) or by the device itself with its token
(``register_key``): accepted when none is registered, the same key again is a no-op, and a
different key only with a rotation signed by the current one. ``reset_key`` (admin) clears it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col

from ...protocols import Reported, Telemetry
from ...protocols.canonical import NotCanonical
from ...registry import report_sig
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..tables import Device
from .ingest import Refused, admit
from .replay_window import DEFAULT_SIZE, Placed, Replayed, place
from .telemetry_store import TelemetryPeriod

log = logging.getLogger(__name__)

# A telemetry period may end at most this far after the controller's clock: one period
# stamped years ahead would otherwise make every later one an overlap.
MAX_CLOCK_AHEAD = timedelta(minutes=10)
OUTCOMES = ("unsigned", "unknown_key", "bad_signature", "replayed", "overlap")
CAS_RETRIES = 5  # the per-message path: another replica moved the window this often in a row
#: channel → the device columns of its window: (highest seq, bitmap below it)
WINDOW_COLUMNS = {"reported": ("report_seq", "report_window"), "telemetry": ("telemetry_seq", "telemetry_window")}
Period = tuple[datetime, datetime]


class ReportRefused(Refused):
    """A report that is not counted; ``outcome`` is one of ``OUTCOMES``."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


# ----- verification -----


def signature_input(device: Any, msg: Reported | Telemetry) -> tuple[str, bytes, str] | None:
    """``(public key, signed bytes, signature)`` to check, or None when ``_check_signature``
    refuses the message before any check (unsigned, no key, another key, not canonical)."""
    if msg.sig is None or msg.seq is None or msg.key_id is None or device.report_public_key is None \
            or msg.key_id != device.report_key_id:
        return None
    try:
        return device.report_public_key, msg.signed_bytes(), msg.sig
    except NotCanonical:
        return None


def _check_signature(device: Device, msg: Reported | Telemetry, kind: str, verified: bool | None = None) -> int:
    """The message's seq once its signature is the device's; raises ``ReportRefused``.
    ``verified``: the outcome of ``report_sig.verify`` on ``signature_input`` when it was
    checked already (a batch checks its signatures on several threads at once)."""
    if msg.sig is None or msg.seq is None or msg.key_id is None:
        raise ReportRefused("unsigned", f"unsigned {kind} from device {device.id} dropped (reports must be signed)")
    if device.report_public_key is None:
        raise ReportRefused("unknown_key", f"{kind} from device {device.id} dropped: the device has no registered "
                                           "report key (the agent registers one on start)")
    if msg.key_id != device.report_key_id:
        raise ReportRefused("bad_signature", f"{kind} from device {device.id} signed by key {msg.key_id[:32]!r}, "
                                             f"not its registered key {device.report_key_id}; dropped")
    if verified is None:
        try:
            data = msg.signed_bytes()
        except NotCanonical as exc:
            raise ReportRefused("bad_signature", f"{kind} from device {device.id} cannot be checked ({exc}); "
                                                 "dropped") from None
        verified = report_sig.verify(device.report_public_key, data, msg.sig)
    if not verified:
        raise ReportRefused("bad_signature", f"{kind} from device {device.id}: signature does not verify; dropped")
    return msg.seq


def _window(device: Device, kind: str, seq: int, size: int) -> Placed:
    highest_col, bits_col = WINDOW_COLUMNS[kind]
    highest = getattr(device, highest_col)
    try:
        return place(highest, getattr(device, bits_col), seq, size)
    except Replayed as exc:
        why = ("was accepted already" if exc.why == "accepted"
               else f"is older than the replay window ({size} below the highest)")
        raise ReportRefused("replayed", f"{kind} seq {seq} from device {device.id} {why} (highest accepted "
                                        f"{highest}): a replay or too far out of order; dropped") from None


def accept(device: Any, kind: str, placed: Placed) -> None:
    """Record ``placed`` on the device (in memory; ``kind``: "reported" or "telemetry")."""
    highest_col, bits_col = WINDOW_COLUMNS[kind]
    setattr(device, highest_col, placed.highest)
    setattr(device, bits_col, placed.bits)


def check_reported(device: Device, msg: Reported, window: int = DEFAULT_SIZE, verified: bool | None = None) -> Placed:
    """The signature and seq checks of a ``reported`` against the device row as it stands
    (pure: the batched ingest, ``devices.batch``, checks against its in-memory rows, so a
    replay within one batch is refused too). Returns where the seq falls in the window
    (``late``: below the highest); raises ``ReportRefused``. Nothing is recorded (``accept``)."""
    return _window(device, "reported", _check_signature(device, msg, "reported", verified), window)


def check_telemetry(device: Device, msg: Telemetry, now: datetime | None = None,
                    window: int = DEFAULT_SIZE, verified: bool | None = None) -> tuple[Placed, datetime, datetime]:
    """The signature, seq and period checks of a ``telemetry`` (pure, as ``check_reported``).
    Returns (placement, period start, period end), both times aware. A late one (``late``)
    must still be checked against the periods counted (``late_overlap``). Raises ``ReportRefused``."""
    placed = _window(device, "telemetry", _check_signature(device, msg, "telemetry", verified), window)
    start, end = _aware(msg.period_start), _aware(msg.period_end)
    if end < start:
        raise ReportRefused("overlap", f"telemetry period from device {device.id} ends before it starts; dropped")
    last_end = _aware(device.report_period_end) if device.report_period_end is not None else None
    if last_end is not None and not placed.late and start < last_end:
        raise ReportRefused("overlap", f"telemetry period {start.isoformat()}–{end.isoformat()} from device {device.id} "
                                       f"overlaps one already counted (up to {last_end.isoformat()}); dropped")
    if last_end is not None and placed.late and end > last_end:
        raise ReportRefused("overlap", f"late telemetry seq {placed.seq} from device {device.id} (below the highest "
                                       f"accepted) ends at {end.isoformat()}, after the newest counted period "
                                       f"({last_end.isoformat()}); dropped")
    if end > (now or _utcnow()) + MAX_CLOCK_AHEAD:
        raise ReportRefused("overlap", f"telemetry period from device {device.id} ends at {end.isoformat()}, "
                                       "ahead of the controller's clock; dropped (check the device's clock)")
    return placed, start, end


def late_overlap(device_id: str, seq: int, start: datetime, end: datetime, counted: Iterable[Period]) -> None:
    """Refuse a late period that overlaps one of ``counted`` (the device's counted periods, aware; pure)."""
    for s, e in counted:
        if s < end and e > start:
            raise ReportRefused("overlap", f"late telemetry seq {seq} from device {device_id}: period "
                                           f"{start.isoformat()}–{end.isoformat()} overlaps one already counted "
                                           f"({s.isoformat()}–{e.isoformat()}); dropped")


def counted_periods(session: Session, spans: Iterable[tuple[str, datetime, datetime]]) -> dict[str, list[Period]]:
    """The counted telemetry periods (aware) overlapping each (device, start, end) span, by
    device: one query for all of them (a range on ``ix_telemetry_period_device_end`` each)."""
    out: dict[str, dict[int, Period]] = {}
    t = TelemetryPeriod.__table__  # type: ignore[attr-defined]
    items = sorted(set(spans))
    for i in range(0, len(items), 200):
        cond = or_(*(and_(t.c.device_id == d, t.c.period_end > s, t.c.period_start < e) for d, s, e in items[i:i + 200]))
        for row in session.connection().execute(
                sa_select(t.c.id, t.c.device_id, t.c.period_start, t.c.period_end).where(cond)):
            out.setdefault(row.device_id, {})[row.id] = (_aware(row.period_start), _aware(row.period_end))
    return {d: list(rows.values()) for d, rows in out.items()}


def _advance(session: Session, device: Device, kind: str, placed: Placed, *, period_end: datetime | None = None) -> bool:
    """Compare-and-set the channel's window from what was read to ``placed`` (and the period
    watermark); False when another writer moved it meanwhile (nothing written)."""
    highest_col, bits_col = WINDOW_COLUMNS[kind]
    h, b = getattr(Device, highest_col), getattr(Device, bits_col)
    stmt = (update(Device).where(col(Device.id) == device.id)
            .where(h.is_not_distinct_from(getattr(device, highest_col)))
            .where(b.is_not_distinct_from(getattr(device, bits_col))))
    values: dict[str, object] = {highest_col: placed.highest, bits_col: placed.bits}
    if period_end is not None:
        values["report_period_end"] = period_end
    result = session.exec(stmt.values(**values).execution_options(synchronize_session=False))  # type: ignore[call-overload]
    if result.rowcount != 1:
        return False
    for name, value in values.items():
        set_committed_value(device, name, value)
    return True


@dataclass(frozen=True)
class Verdict:
    """An accepted report: the device row and where its seq fell (``late``: below the highest)."""

    device: Device
    placed: Placed

    @property
    def late(self) -> bool:
        return self.placed.late


def _moved(session: Session, device: Device, kind: str, seq: int) -> None:
    log.info("device %s: %s seq %d: another controller replica moved the window meanwhile; deciding again",
             device.id, kind, seq)
    session.refresh(device)


def _kept_moving(device: Device, kind: str, seq: int) -> ReportRefused:
    return ReportRefused("replayed", f"{kind} seq {seq} from device {device.id}: the window kept moving under "
                                     f"other controller replicas ({CAS_RETRIES} tries); dropped")


def verify_reported(session: Session, msg: Reported, window: int = DEFAULT_SIZE) -> Verdict:
    """Check a ``reported`` message and record its seq (not committed: the caller's store commits).

    Raises:
        Refused: ``unknown_device``/``revoked`` (``ingest.admit``) or a ``ReportRefused`` outcome.
    """
    device = admit(session, msg.device_id)
    for _ in range(CAS_RETRIES):
        placed = check_reported(device, msg, window)
        if _advance(session, device, "reported", placed):
            return Verdict(device, placed)
        _moved(session, device, "reported", placed.seq)
    raise _kept_moving(device, "reported", msg.seq or 0)


def verify_telemetry(session: Session, msg: Telemetry, now: datetime | None = None,
                     window: int = DEFAULT_SIZE) -> Verdict:
    """Check a ``telemetry`` message; record its seq and, unless late, its period end (not committed).

    Raises:
        Refused: as ``verify_reported``, and ``overlap`` for a period already (partly) counted.
    """
    device = admit(session, msg.device_id)
    for _ in range(CAS_RETRIES):
        placed, start, end = check_telemetry(device, msg, now, window)
        if placed.late:
            counted = counted_periods(session, [(device.id, start, end)]).get(device.id, [])
            late_overlap(device.id, placed.seq, start, end, counted)
        if _advance(session, device, "telemetry", placed, period_end=None if placed.late else end):
            return Verdict(device, placed)
        _moved(session, device, "telemetry", placed.seq)
    raise _kept_moving(device, "telemetry", msg.seq or 0)


# ----- key registration -----


def set_key(device: Device, public_key: str) -> str:
    """Bind ``public_key`` (base64 or PEM) to the device (operator action); returns its key id.

    A new key starts a new seq space: the counters are cleared, the period watermark kept.

    Raises:
        BadRequest: not an Ed25519 public key.
    """
    try:
        key = report_sig.parse_public_key(public_key)
    except report_sig.ReportKeyError as exc:
        raise BadRequest(f"report key of device {device.id}: {exc}") from None
    kid = report_sig.key_id(key)
    if key != device.report_public_key:
        device.report_public_key, device.report_key_id = key, kid
        device.report_seq = device.telemetry_seq = None
        device.report_window = device.telemetry_window = None
        log.info("device %s: report key %s registered", device.id, kid)
    return kid


def register_key(session: Session, device_id: str, public_key: str, rotation_signature: str | None = None) -> tuple[str, bool]:
    """The device's own registration (``PUT /devices/self/report-key``); returns (key id, changed).

    Raises:
        BadRequest: not an Ed25519 public key.
        Conflict: another key is registered and no rotation signature was given.
        Forbidden: the rotation signature is not the current key's over the new key.
    """
    device = admit(session, device_id)
    try:
        key = report_sig.parse_public_key(public_key)
    except report_sig.ReportKeyError as exc:
        raise BadRequest(f"report key: {exc}") from None
    current = device.report_public_key
    if current == key:
        return device.report_key_id or report_sig.key_id(key), False
    if current is not None:
        if not rotation_signature:
            raise Conflict(f"device {device_id} already has report key {device.report_key_id}; a new key must come "
                           "with a rotation signed by it (or an admin runs `fleet device reset-report-key`)")
        if not report_sig.verify_rotation(current, device_id, key, rotation_signature):
            log.warning("device %s: report key rotation refused: not signed by the current key %s",
                        device_id, device.report_key_id)
            raise Forbidden(f"rotation refused: not signed by the current report key {device.report_key_id}")
    kid = set_key(device, key)
    session.add(device)
    session.commit()
    log.info("device %s: report key %s %s", device_id, kid, "rotated in" if current else "registered by the device")
    return kid, True


def reset_key(session: Session, device_id: str) -> Device:
    """Forget the device's report key (admin): its next registration is accepted as a first one."""
    device = session.get(Device, device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r}")
    old = device.report_key_id
    device.report_public_key = device.report_key_id = None
    device.report_seq = device.telemetry_seq = None
    device.report_window = device.telemetry_window = None
    session.add(device)
    session.commit()
    log.warning("device %s: report key %s cleared by an operator; reports are refused until it registers one",
                device_id, old or "-")
    return device
