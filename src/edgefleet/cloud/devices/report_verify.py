"""Signed device reports, controller side: check a ``reported`` or ``telemetry`` before anything is stored.

``verify_reported`` / ``verify_telemetry`` run first in the controller's handlers, in the
session that then stores the message. In order: the device is enrolled (``ingest.admit``);
the message carries ``seq``, ``key_id`` and ``sig`` (else ``unsigned``); the device has a
registered report key (else ``unknown_key``); ``key_id`` names that key and ``sig`` is its
Ed25519 signature over the message's canonical bytes (else ``bad_signature``); ``seq`` is
above the highest accepted on that channel (else ``replayed`` — a replay or a reordering);
a telemetry period starts at or after the end of the last counted one and does not end in
the future (else ``overlap``). A refusal raises ``ReportRefused``; the bridge counts it under
its outcome and logs it with the device id. The seq (and period) advance is a conditional
UPDATE, so two controller replicas handed the same message count it once.

Key registration: at enrolment (``set_key``, operator) or by the device itself with its token
(``register_key``): accepted when none is registered, the same key again is a no-op, and a
different key only with a rotation signed by the current one. ``reset_key`` (admin) clears it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col

from ...protocols import Reported, Telemetry
from ...protocols.canonical import NotCanonical
from ...registry import report_sig
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..tables import Device
from .ingest import Refused, admit

log = logging.getLogger(__name__)

# A telemetry period may end at most this far after the controller's clock: one period
# stamped years ahead would otherwise make every later one an overlap.
MAX_CLOCK_AHEAD = timedelta(minutes=10)
OUTCOMES = ("unsigned", "unknown_key", "bad_signature", "replayed", "overlap")


class ReportRefused(Refused):
    """A report that is not counted; ``outcome`` is one of ``OUTCOMES``."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


# ----- verification -----


def _check_signature(device: Device, msg: Reported | Telemetry, kind: str) -> int:
    """The message's seq once its signature is the device's; raises ``ReportRefused``."""
    if msg.sig is None or msg.seq is None or msg.key_id is None:
        raise ReportRefused("unsigned", f"unsigned {kind} from device {device.id} dropped (reports must be signed)")
    if device.report_public_key is None:
        raise ReportRefused("unknown_key", f"{kind} from device {device.id} dropped: the device has no registered "
                                           "report key (the agent registers one on start)")
    if msg.key_id != device.report_key_id:
        raise ReportRefused("bad_signature", f"{kind} from device {device.id} signed by key {msg.key_id[:32]!r}, "
                                             f"not its registered key {device.report_key_id}; dropped")
    try:
        data = msg.signed_bytes()
    except NotCanonical as exc:
        raise ReportRefused("bad_signature", f"{kind} from device {device.id} cannot be checked ({exc}); dropped") from None
    if not report_sig.verify(device.report_public_key, data, msg.sig):
        raise ReportRefused("bad_signature", f"{kind} from device {device.id}: signature does not verify; dropped")
    return msg.seq


def _advance(session: Session, device: Device, column: str, seq: int, kind: str, *,
             period: tuple[datetime, datetime] | None = None) -> None:
    """Record ``seq`` (and the period end) as accepted, unless another writer got there first."""
    seq_col = getattr(Device, column)
    stmt = update(Device).where(col(Device.id) == device.id).where(or_(seq_col.is_(None), seq_col < seq))
    values: dict[str, object] = {column: seq}
    if period is not None:
        start, end = period
        pe = col(Device.report_period_end)
        stmt = stmt.where(or_(pe.is_(None), pe <= start))
        values["report_period_end"] = end
    result = session.exec(stmt.values(**values).execution_options(synchronize_session=False))  # type: ignore[call-overload]
    if result.rowcount != 1:
        raise ReportRefused("replayed", f"{kind} seq {seq} from device {device.id} was accepted meanwhile "
                                        "(another controller replica); dropped")
    for name, value in values.items():
        set_committed_value(device, name, value)


def check_reported(device: Device, msg: Reported) -> int:
    """The signature and seq checks of a ``reported`` against the device row as it stands
    (pure: the batched ingest, ``devices.batch``, checks against its in-memory rows, so a
    replay within one batch is refused too). Returns the seq; raises ``ReportRefused``."""
    seq = _check_signature(device, msg, "reported")
    if device.report_seq is not None and seq <= device.report_seq:
        raise ReportRefused("replayed", f"reported seq {seq} from device {device.id} is not above the last "
                                        f"accepted ({device.report_seq}): a replay or out of order; dropped")
    return seq


def check_telemetry(device: Device, msg: Telemetry, now: datetime | None = None) -> tuple[int, datetime, datetime]:
    """The signature, seq and period checks of a ``telemetry`` (pure, as ``check_reported``).
    Returns (seq, period start, period end), both times aware; raises ``ReportRefused``."""
    seq = _check_signature(device, msg, "telemetry")
    if device.telemetry_seq is not None and seq <= device.telemetry_seq:
        raise ReportRefused("replayed", f"telemetry seq {seq} from device {device.id} is not above the last "
                                        f"accepted ({device.telemetry_seq}): a replay or out of order; dropped")
    start, end = _aware(msg.period_start), _aware(msg.period_end)
    if end < start:
        raise ReportRefused("overlap", f"telemetry period from device {device.id} ends before it starts; dropped")
    last_end = _aware(device.report_period_end) if device.report_period_end is not None else None
    if last_end is not None and start < last_end:
        raise ReportRefused("overlap", f"telemetry period {start.isoformat()}–{end.isoformat()} from device {device.id} "
                                       f"overlaps one already counted (up to {last_end.isoformat()}); dropped")
    if end > (now or _utcnow()) + MAX_CLOCK_AHEAD:
        raise ReportRefused("overlap", f"telemetry period from device {device.id} ends at {end.isoformat()}, "
                                       "ahead of the controller's clock; dropped (check the device's clock)")
    return seq, start, end


def verify_reported(session: Session, msg: Reported) -> Device:
    """Check a ``reported`` message and record its seq (not committed: the caller's store commits).

    Raises:
        Refused: ``unknown_device``/``revoked`` (``ingest.admit``) or a ``ReportRefused`` outcome.
    """
    device = admit(session, msg.device_id)
    seq = check_reported(device, msg)
    _advance(session, device, "report_seq", seq, "reported")
    return device


def verify_telemetry(session: Session, msg: Telemetry, now: datetime | None = None) -> Device:
    """Check a ``telemetry`` message; record its seq and period end (not committed).

    Raises:
        Refused: as ``verify_reported``, and ``overlap`` for a period already (partly) counted.
    """
    device = admit(session, msg.device_id)
    seq, start, end = check_telemetry(device, msg, now)
    _advance(session, device, "telemetry_seq", seq, "telemetry", period=(start, end))
    return device


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
    session.add(device)
    session.commit()
    log.warning("device %s: report key %s cleared by an operator; reports are refused until it registers one",
                device_id, old or "-")
    return device
