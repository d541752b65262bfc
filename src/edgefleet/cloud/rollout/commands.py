"""Operator commands and supersession: pure state transitions on ``RolloutState``.

``apply_command(state, command, now)`` is what ``fleet rollout pause|resume|abort|rollback``
and ``POST /api/v1/rollouts/{id}/{command}`` do to the persisted state; the next ``plan``
pass turns the new state into device actions. Repeating a command is harmless (HTTP
retries): pausing a paused rollout returns it unchanged. A command the state does not allow
raises ``IllegalTransition``.

=============  ===============================================  ==========================
command        allowed from                                      to
=============  ===============================================  ==========================
pause          pending, running, soaking                         paused (remembers where)
resume         paused                                            where it was paused
resume         breached (policy ``pause``)                       running; the wave soaks
                                                                 again and its gates are
                                                                 judged afresh
abort          pending, running, soaking, paused, breached       aborted; devices stay
                                                                 where they are
rollback       any but scheduled/rolled_back/superseded          rolling_back
cancel         scheduled (before it starts)                      aborted
=============  ===============================================  ==========================

A ``scheduled`` rollout (``--start-at``) takes only ``cancel``/``abort`` and
``reschedule(state, start_at, now)``; the planner starts it at ``state.start_at``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from .errors import IllegalTransition
from .model import RolloutSpec, RolloutState
from .selector import Selectable

Command = Literal["pause", "resume", "abort", "rollback", "cancel"]
COMMANDS: tuple[str, ...] = ("pause", "resume", "abort", "rollback", "cancel")
_LIVE = ("pending", "running", "soaking")


def apply_command(state: RolloutState, command: str, now: float, *,
                  reason: str | None = None) -> RolloutState:
    """The state after an operator command. Idempotent.

    Raises:
        IllegalTransition: the command makes no sense in this state; the message says why.
    """
    s = state.state
    if command == "cancel":
        if s == "scheduled":
            return state.model_copy(update=dict(state="aborted", finished_at=now,
                                                reason=reason or "cancelled before it started"))
        if s == "aborted":
            return state
        raise IllegalTransition(command, s, "only a scheduled rollout can be cancelled; "
                                "abort or roll back one that has started")
    if s == "scheduled":
        if command == "abort":
            return state.model_copy(update=dict(state="aborted", finished_at=now,
                                                reason=reason or "aborted before it started"))
        if command in ("pause", "resume", "rollback"):
            raise IllegalTransition(command, s, "it has not started; reschedule or cancel it")
    if command == "pause":
        if s == "paused" or s == "breached":
            return state
        if s in _LIVE:
            return state.model_copy(update=dict(state="paused", paused_from=s,
                                                reason=reason or "paused by operator"))
        raise IllegalTransition(command, s, "it has finished")
    if command == "resume":
        if s in _LIVE:
            return state
        if s == "paused":
            return state.model_copy(update=dict(state=state.paused_from or "running",
                                                paused_from=None, reason=None))
        if s == "breached":
            return state.model_copy(update=dict(state="running", paused_from=None,
                                                soak_started_at=None, reason=None))
        raise IllegalTransition(command, s, "only a paused or breached rollout can resume")
    if command == "abort":
        if s == "aborted":
            return state
        if s in (*_LIVE, "paused", "breached"):
            return state.model_copy(update=dict(state="aborted", finished_at=now,
                                                paused_from=None,
                                                reason=reason or "aborted by operator"))
        if s == "rolling_back":
            raise IllegalTransition(command, s, "a rollback cannot be stopped half-way")
        raise IllegalTransition(command, s, "it has finished")
    if command == "rollback":
        if s in ("rolling_back", "rolled_back"):
            return state
        if s == "superseded":
            raise IllegalTransition(command, s, f"superseded by {state.superseded_by}; "
                                    "roll back that rollout instead")
        return state.model_copy(update=dict(
            state="rolling_back", rollback_started_at=now, finished_at=None, paused_from=None,
            reason=reason or "rollback requested by operator"))
    raise IllegalTransition(command, s, f"unknown command; known: {', '.join(COMMANDS)}")


def reschedule(state: RolloutState, start_at: float, now: float) -> RolloutState:
    """A scheduled rollout with a new start time (``start_at`` already validated as future).

    Raises:
        IllegalTransition: the rollout is not scheduled (it started or ended).
    """
    if state.state != "scheduled":
        raise IllegalTransition("reschedule", state.state, "only a scheduled rollout can be "
                                "rescheduled, before it starts")
    if start_at <= now:
        raise IllegalTransition("reschedule", state.state, "the new start time is in the past")
    return state.model_copy(update=dict(start_at=start_at))


def supersede(state: RolloutState, new_rollout_id: str, now: float) -> RolloutState:
    """Mark ``state``'s rollout superseded by ``new_rollout_id``: it stops acting at once and
    the new rollout takes over its devices (their rollback target becomes what they run when
    the new rollout reaches them). Idempotent for the same new id.

    Raises:
        IllegalTransition: it was already superseded by another rollout.
    """
    if state.state == "superseded":
        if state.superseded_by == new_rollout_id:
            return state
        raise IllegalTransition("supersede", "superseded",
                                f"already superseded by {state.superseded_by}")
    return state.model_copy(update=dict(
        state="superseded", superseded_by=new_rollout_id, paused_from=None,
        finished_at=state.finished_at if state.finished_at is not None else now,
        reason=f"superseded by rollout {new_rollout_id}"))


def supersedes(new: RolloutSpec, old: RolloutSpec, devices: Iterable[Selectable],
               old_members: Iterable[str] = ()) -> bool:
    """Whether starting ``new`` must supersede ``old``: same slot, and some device is
    selected by both (or is already one of ``old``'s members and selected by ``new``)."""
    if new.slot != old.slot or new.id == old.id:
        return False
    members = set(old_members)
    return any(new.selector.matches(d)
               and (d.device_id in members or old.selector.matches(d)) for d in devices)
