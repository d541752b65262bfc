"""Model version lifecycle: active → deprecated (allowed, with a warning) → blocked (never
deployed or rolled out again until unblocked), and where each version runs now.

Flow: ``fleet model deprecate|block|unblock`` / ``POST /api/v1/models/{name}/{version}/…``
call ``set_status``, which writes the status with its reason, who and when, and — for a
block — aborts every live rollout of the version in the same transaction (an event on the
rollout and an audit entry each). Every deploy path asks ``check_deployable`` first:
``fleet.deploy`` (direct), ``rollout.service`` (start, resume) and the reconciler, which
also aborts a rollout of a blocked version it meets (a block that landed while a pass was
under way, or written by another replica) before dispatching anything, and never reverts a
device *to* a blocked version. ``fleet model yank`` (cloud/yank.py) builds on this.

Where a version runs (``usage``) comes from the devices' signed reports (``installed`` per
slot), not from what the controller wants: a device still running a blocked version is
flagged (``flags`` → ``SlotPublic.model_status``) on the fleet page and in ``fleet device ls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlmodel import Session, col, select

from ..protocols import SLOTS
from . import audit
from .errors import BadRequest, Conflict, ModelBlocked
from .rollout.commands import apply_command
from .rollout.store import StaleState, add_event, lock_rollout, state_of, write_state
from .rollout.tables import Rollout
from .tables import MODEL_STATUSES, ModelVersion

#: Rollout states a block aborts: a rollout still sending the version to devices (or able
#: to, once resumed). ``rolling_back`` is moving devices off it already and is left alone;
#: ``completed`` cannot be aborted, and the reconciler sends a blocked version to no late joiner.
ABORTABLE = ("pending", "running", "soaking", "paused", "breached")
MAX_REASON = 1024
ATTEMPTS = 5


def label(mv: ModelVersion) -> str:
    return f"{mv.name}:{mv.version}"


def blocked_error(mv: ModelVersion) -> ModelBlocked:
    who = f" by {mv.status_by}" if mv.status_by else ""
    return ModelBlocked(f"{label(mv)} is blocked{who}: {mv.status_reason or 'no reason given'} "
                        f"(fleet model unblock {label(mv)} --reason … to allow it again)")


def check_deployable(mv: ModelVersion) -> list[str]:
    """Raises ModelBlocked for a blocked version; returns the warnings for a deprecated one."""
    if mv.status == "blocked":
        raise blocked_error(mv)
    if mv.status == "deprecated":
        return [f"{label(mv)} is deprecated: {mv.status_reason or 'no reason given'}"]
    return []


def check_reason(reason: str | None, *, required: bool) -> str | None:
    text = (reason or "").strip()
    if not text:
        if required:
            raise BadRequest("give a --reason: it is shown to everyone who tries to deploy the version")
        return None
    if len(text) > MAX_REASON:
        raise BadRequest(f"reason is {len(text)} characters; at most {MAX_REASON}")
    return text


@dataclass
class StatusChange:
    """What ``set_status`` did."""

    model: ModelVersion
    previous: str
    aborted_rollouts: list[str] = field(default_factory=list)
    running: dict[str, list[str]] = field(default_factory=dict)  # slot → devices still running it


def set_status(session: Session, mv: ModelVersion, status: str, *, reason: str | None, actor: str,
               role: str = "operator", now: float, audit_log: audit.AuditLog | None = None) -> StatusChange:
    """Deprecate, block or unblock (``active``) one version; a block aborts its live rollouts.
    Idempotent (the same status again changes only the reason). Commits.

    Raises:
        BadRequest: unknown status, missing or overlong reason.
    """
    if status not in MODEL_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(MODEL_STATUSES)}, not {status!r}")
    text = check_reason(reason, required=status != "active")
    mv_id = mv.id
    for _attempt in range(ATTEMPTS):
        try:
            return _set_status_once(session, mv, status, text, actor=actor, role=role, now=now,
                                    audit_log=audit_log)
        except StaleState:  # a reconcile pass wrote one of its rollouts in between: again
            session.rollback()
            fresh = session.get(ModelVersion, mv_id)
            assert fresh is not None
            mv = fresh
    raise Conflict(f"rollouts of {label(mv)} keep changing; try again")


def _set_status_once(session: Session, mv: ModelVersion, status: str, text: str | None, *, actor: str,
                     role: str, now: float, audit_log: audit.AuditLog | None) -> StatusChange:
    change = StatusChange(model=mv, previous=mv.status)
    mv.status, mv.status_reason = status, text
    mv.status_by, mv.status_at = actor[:128] or None, datetime.fromtimestamp(now, timezone.utc)
    session.add(mv)
    if status == "blocked":
        why = f"model {label(mv)} blocked by {actor or 'operator'}: {text}"
        for rid in session.exec(select(Rollout.id).where(Rollout.model_version_id == mv.id)
                                .where(col(Rollout.state).in_(ABORTABLE))).all():
            row = lock_rollout(session, rid)
            if row is not None and abort_rollout(session, row, why, actor=actor, role=role, now=now,
                                                 audit_log=audit_log):
                change.aborted_rollouts.append(rid)
    session.commit()
    session.refresh(mv)
    change.running = devices_running(session, mv.digest)
    return change


def abort_rollout(session: Session, row: Rollout, reason: str, *, actor: str, role: str, now: float,
                  audit_log: audit.AuditLog | None = None) -> bool:
    """Abort one live rollout because its model is blocked: state, event and audit entry in
    the caller's transaction. Returns False when the rollout is not in an abortable state.

    Raises:
        StaleState: the rollout was written meanwhile (the caller rolls back and retries).
    """
    state = state_of(row)
    if state.state not in ABORTABLE:
        return False
    new = apply_command(state, "abort", now, reason=reason)
    write_state(session, row, new, now)
    add_event(session, row.id, now, f"aborted: {reason}", level="warning", kind="command",
              data={"command": "abort", "by": actor, "from": state.state, "to": new.state,
                    "model_blocked": f"{row.model_name}:{row.model_version}"})
    fields: dict[str, Any] = dict(actor=actor or "system", role=role, action="rollout.abort", target=row.id,
                                  summary={"reason": reason, "model": f"{row.model_name}:{row.model_version}",
                                           "from": state.state},
                                  now=datetime.fromtimestamp(now, timezone.utc))
    if audit_log is not None:
        audit_log.append(session, **fields)
    else:
        audit.append(session, **fields)
    return True


# ----- where versions run ---------------------------------------------------------------------


def devices_running(session: Session, digest: str) -> dict[str, list[str]]:
    """slot → ids of the enrolled devices running ``digest``: only their rows are read (SQL)."""
    from .devices.placement import running_on

    return running_on(session, digest)


def counts(where: dict[str, list[str]]) -> dict[str, int]:
    return {slot: len(where.get(slot, [])) for slot in SLOTS}


def flags(session: Session) -> dict[str, tuple[str, str | None]]:
    """digest → (status, reason) of every version that is not active (few, by design)."""
    rows = session.exec(select(ModelVersion.digest, ModelVersion.status, ModelVersion.status_reason)
                        .where(ModelVersion.status != "active")).all()
    return {d: (s, r) for d, s, r in rows}


def same_bytes_notes(session: Session, mv: ModelVersion) -> list[str]:
    """Notes for a push: this version, or another holding the same ONNX bytes, is blocked
    or deprecated. The push is allowed (a new version may be a deliberate re-release); the
    operator is told."""
    notes: list[str] = []
    if mv.status != "active":
        notes.append(f"{label(mv)} itself is {mv.status}: {mv.status_reason or 'no reason given'}")
    if mv.model_sha256:
        others = session.exec(select(ModelVersion).where(ModelVersion.model_sha256 == mv.model_sha256)
                              .where(ModelVersion.id != mv.id).where(ModelVersion.status != "active")
                              .order_by(col(ModelVersion.created_at))).all()
        for o in others:
            notes.append(f"the same model bytes (sha256 {mv.model_sha256[:12]}…) are {o.status} under "
                         f"{label(o)}: {o.status_reason or 'no reason given'}")
    return notes


__all__ = ["ABORTABLE", "StatusChange", "abort_rollout", "blocked_error", "check_deployable", "check_reason",
           "counts", "devices_running", "flags", "label", "same_bytes_notes", "set_status"]
