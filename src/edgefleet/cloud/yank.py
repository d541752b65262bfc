"""``fleet model yank NAME:VERSION``: block a version and move every device off it, through
the same reconciler, waves and gates as any rollout.

Flow: ``yank`` blocks the version (``lifecycle.set_status``: its live rollouts are aborted),
finds every device that runs it or is meant to (signed report ``installed`` or the
controller's assignment, per slot), and asks the pure ``plan_moves`` where each goes:

1. ``--to NAME:VERSION`` when given, for every device;
2. else what the device still runs, when it never got the yanked version installed;
3. else the device's own last known good for the slot (its signed report — the model the
   agent rolls back to locally, kept on the device);
4. else the model the controller's last rollout of the yanked version replaced on it
   (``RolloutMember.previous``).

A candidate that is not in the catalog, is blocked, or is the yanked version is skipped.
A device left without a target is *needs attention* (returned, shown, audited) in the
control slot; in the shadow slot its candidate is simply removed (the shadow never serves).

Then one ordinary rollout per (slot, target version), selecting exactly its devices
(``device:a|b|…``) — the rollout model has one model per rollout, and keeping it that way
means status, gates, events, supersession and rollback work unchanged. Yank rollouts
default to ``on_breach=pause``: a bad replacement stops the yank where it is (a rollback
would send devices back to the blocked version, which the reconciler refuses).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from ..protocols import SLOTS, ModelRef, SlotName
from . import audit, catalog, lifecycle
from .devices import fleet
from .devices.fleet import DesiredPublisher
from .errors import BadRequest
from .rollout.service import DURATION_PATTERN, WAVES_PATTERN, RolloutCreate, start_rollout
from .rollout.store import model_ref, ref_of
from .rollout.tables import Rollout, RolloutMember
from .tables import MODEL_REF_MAX, MODEL_REF_PATTERN, Device, ModelVersion, SlotAssignment

Source = Literal["--to", "runs now", "last known good", "rollout previous"]


# ----- the pure core ----------------------------------------------------------------------


@dataclass(frozen=True)
class OnVersion:
    """One (device, slot) that runs the yanked version or is meant to."""

    device_id: str
    slot: str
    installed: ModelRef | None = None
    last_known_good: ModelRef | None = None  # the device's signed report
    rollout_previous: ModelRef | None = None  # what the last rollout of the version replaced


@dataclass(frozen=True)
class Move:
    device_id: str
    slot: str
    target: ModelRef | None  # None: empty the (shadow) slot
    source: Source | Literal["cleared"]


@dataclass(frozen=True)
class Attention:
    device_id: str
    slot: str
    reason: str


def plan_moves(yanked: ModelRef, on_it: Iterable[OnVersion], to: ModelRef | None,
               status_of: Mapping[str, str]) -> tuple[list[Move], list[Attention]]:
    """Where each device goes. ``status_of`` maps a catalog digest to its status; a digest
    missing from it is not in the catalog."""

    def usable(ref: ModelRef | None) -> bool:
        return ref is not None and ref.digest != yanked.digest and status_of.get(ref.digest) in ("active", "deprecated")

    moves: list[Move] = []
    attention: list[Attention] = []
    for o in sorted(on_it, key=lambda o: (o.slot, o.device_id)):
        if to is not None:
            moves.append(Move(o.device_id, o.slot, to, "--to"))
            continue
        candidates: tuple[tuple[ModelRef | None, Source], ...] = (
            (o.installed if o.installed is not None and o.installed.digest != yanked.digest else None, "runs now"),
            (o.last_known_good, "last known good"),
            (o.rollout_previous, "rollout previous"),
        )
        for ref, source in candidates:
            if usable(ref):
                moves.append(Move(o.device_id, o.slot, ref, source))
                break
        else:
            if o.slot == "shadow":
                moves.append(Move(o.device_id, o.slot, None, "cleared"))
            else:
                tried = [f"{src} {ref.label} ({status_of.get(ref.digest, 'not in the catalog')})"
                         for ref, src in candidates if ref is not None and ref.digest != yanked.digest]
                attention.append(Attention(o.device_id, o.slot, "no known good version"
                                           + (f" (tried: {'; '.join(tried)})" if tried else "")
                                           + "; name one with --to, or fleet deploy one to it"))
    return moves, attention


# ----- the I/O shell ----------------------------------------------------------------------


class YankRequest(BaseModel):
    """``fleet model yank`` / ``POST /api/v1/models/{name}/{version}/yank``."""

    reason: str = Field(min_length=1, max_length=lifecycle.MAX_REASON)
    to: str | None = Field(default=None, pattern=MODEL_REF_PATTERN, max_length=MODEL_REF_MAX,
                           description="NAME:VERSION for every device; default: each device's last known good")
    waves: str = Field(default="1,10,50,100", pattern=WAVES_PATTERN, max_length=200)
    soak: str = Field(default="30m", pattern=DURATION_PATTERN, description="a duration with a unit: 90s, 30m, 2h")
    gates: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=32, description="default: failure<=0.02")
    on_breach: Literal["pause", "rollback"] = "pause"
    device_timeout: str = Field(default="30m", pattern=DURATION_PATTERN)
    max_concurrent: int | None = Field(default=None, ge=1, le=1_000_000)


class YankRollout(BaseModel):
    id: str
    slot: str
    target: str
    devices: list[str]


class YankMove(BaseModel):
    device: str
    slot: str
    target: str | None
    source: str


class YankAttention(BaseModel):
    device: str
    slot: str
    reason: str


class YankResult(BaseModel):
    model: str
    status: str
    reason: str
    aborted_rollouts: list[str] = []
    rollouts: list[YankRollout] = []
    moves: list[YankMove] = []
    cleared: list[str] = []  # devices whose shadow slot was emptied
    needs_attention: list[YankAttention] = []
    warnings: list[str] = []


def on_version(session: Session, mv: ModelVersion) -> list[OnVersion]:
    """Every (device, slot) running ``mv`` (signed report) or assigned it, not revoked."""
    assigned = {(a.device_id, a.slot) for a in session.exec(
        select(SlotAssignment).where(SlotAssignment.model_version_id == mv.id)).all()}
    previous: dict[tuple[str, str], ModelRef] = {}
    rows = session.exec(select(RolloutMember, Rollout.slot).where(RolloutMember.rollout_id == Rollout.id)
                        .where(Rollout.model_version_id == mv.id)
                        .where(col(RolloutMember.dispatched_at).is_not(None))
                        .order_by(col(RolloutMember.dispatched_at))).all()
    for m, slot in rows:  # the newest dispatch wins
        ref = ref_of(m.previous)
        if ref is not None:
            previous[(m.device_id, slot)] = ref
    out: list[OnVersion] = []
    for d in session.exec(select(Device).where(Device.revoked_at == None).order_by(Device.id)).all():  # noqa: E711
        reported = (d.reported or {}).get("slots") or {}
        for slot in SLOTS:
            rep = reported.get(slot) or {}
            installed = ref_of(rep.get("installed"))
            if (d.id, slot) not in assigned and (installed is None or installed.digest != mv.digest):
                continue
            out.append(OnVersion(d.id, slot, installed=installed, last_known_good=ref_of(rep.get("last_known_good")),
                                 rollout_previous=previous.get((d.id, slot))))
    return out


def yank(session: Session, mv: ModelVersion, body: YankRequest, *, actor: str, role: str, now: float,
         publisher: DesiredPublisher | None = None, audit_log: audit.AuditLog | None = None) -> YankResult:
    """Block ``mv`` and start the rollouts that move every device off it. Commits.

    Raises:
        BadRequest: --to names the yanked version, a bad wave/gate/duration (nothing changed).
        NotFound: --to names no version. ModelBlocked: --to names a blocked version.
    """
    target = catalog.get_version(session, body.to) if body.to else None
    warnings: list[str] = []
    if target is not None:
        if target.id == mv.id:
            raise BadRequest(f"--to {body.to} is the version being yanked; name another one")
        warnings += lifecycle.check_deployable(target)
    _check_spec(body, mv)  # bad input changes nothing: not even the block
    change = lifecycle.set_status(session, mv, "blocked", reason=body.reason, actor=actor, role=role, now=now,
                                  audit_log=audit_log)
    statuses = dict(session.exec(select(ModelVersion.digest, ModelVersion.status)).all())
    moves, attention = plan_moves(model_ref(mv), on_version(session, mv),
                                  model_ref(target) if target is not None else None, statuses)
    result = YankResult(model=lifecycle.label(mv), status="blocked", reason=mv.status_reason or "",
                        aborted_rollouts=change.aborted_rollouts, warnings=warnings,
                        moves=[YankMove(device=m.device_id, slot=m.slot, target=m.target.label if m.target else None,
                                        source=m.source) for m in moves],
                        needs_attention=[YankAttention(device=a.device_id, slot=a.slot, reason=a.reason)
                                         for a in attention])
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    labels: dict[str, str] = {}
    for m in moves:
        if m.target is None:
            result.cleared.append(m.device_id)
        else:
            groups[(m.slot, m.target.digest)].append(m.device_id)
            labels[m.target.digest] = m.target.label
    if result.cleared:
        changed = fleet.assign(session, None, "shadow", result.cleared)
        if publisher is not None:
            publisher.publish_devices(session, changed)  # signed in bulk
    for (slot, digest), device_ids in sorted(groups.items()):
        row = start_rollout(session, RolloutCreate(
            model=labels[digest], slot=cast(SlotName, slot), select="device:" + "|".join(sorted(device_ids)), waves=body.waves,
            soak=body.soak, gates=body.gates, on_breach=body.on_breach, device_timeout=body.device_timeout,
            max_concurrent=body.max_concurrent), now, actor=actor)
        result.rollouts.append(YankRollout(id=row.id, slot=slot, target=labels[digest], devices=sorted(device_ids)))
    _record(session, result, actor=actor, role=role, now=now, audit_log=audit_log)
    session.commit()
    return result


def _check_spec(body: YankRequest, mv: ModelVersion) -> None:
    from .rollout import build_spec
    from .rollout.errors import SpecError

    try:
        build_spec(id="yank-check", model=model_ref(mv), slot="control", select="all", waves=body.waves,
                   soak=body.soak, gates=body.gates, on_breach=body.on_breach, device_timeout=body.device_timeout,
                   max_concurrent=body.max_concurrent)
    except SpecError as exc:
        raise BadRequest(str(exc)) from None


def _record(session: Session, result: YankResult, *, actor: str, role: str, now: float,
            audit_log: audit.AuditLog | None) -> None:
    """One audit entry per rollout the yank started, and one for the devices left over."""
    at = datetime.fromtimestamp(now, timezone.utc)
    entries: list[dict[str, Any]] = [
        dict(action="rollout.start", target=r.id,
             summary={"yank": result.model, "model": r.target, "slot": r.slot, "devices": len(r.devices)})
        for r in result.rollouts]
    if result.needs_attention or result.cleared:
        entries.append(dict(action="model.yank_leftovers", target=result.model,
                            summary={"needs_attention": [a.device for a in result.needs_attention][:100],
                                     "shadow_cleared": result.cleared[:100]}))
    for e in entries:
        fields = dict(actor=actor or "operator", role=role, now=at, **e)
        if audit_log is not None:
            audit_log.append(session, **fields)
        else:
            audit.append(session, **fields)


__all__ = ["Attention", "Move", "OnVersion", "YankRequest", "YankResult", "on_version", "plan_moves", "yank"]
