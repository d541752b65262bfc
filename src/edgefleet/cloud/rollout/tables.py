"""Database tables of rollouts (migration 0002): the rollout, its members, its event log,
and the controller lease.

* ``Rollout`` — what the operator asked for, as the CLI/API text (``select``, ``waves``,
  ``gates`` …; ``build_spec`` rebuilds the ``RolloutSpec`` from it), and where it is
  (``state_json``: the pure core's ``RolloutState``; ``state`` mirrors its phase for
  listing). ``revision`` grows with every write of ``state_json``: a writer that read
  revision N only writes if it is still N (optimistic lock; PostgreSQL also takes the row
  with ``SELECT … FOR UPDATE``).
* ``RolloutMember`` — one device in one rollout: the fields the planner's actions write
  (``wave`` … ``timed_out_at``), the phase it was last seen in and since when, and the
  health figures of the rollout's model on that device, accumulated from telemetry since
  it was dispatched (see ``store.record_telemetry``).
* ``RolloutEvent`` — the rollout's log: planner ``Log`` lines, gate decisions, commands.
* ``ControllerLease`` — who runs reconcile passes (``name``, ``holder``, ``expires_at``).
* ``ReconcileDirty`` — devices changed since the last pass (``dirty.py``, migration 0020).
* ``rollout_member_archive`` — the member rows of finished rollouts (aborted, superseded),
  moved out of the hot ``rollout_member`` table (``archive.py``); same columns plus
  ``archived_at``. Status and history read them back.

Times are float seconds since the epoch, as in the pure core.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Float, Index, Table, Text
from sqlmodel import Field, SQLModel


class Rollout(SQLModel, table=True):
    __tablename__ = "rollout"

    id: str = Field(primary_key=True, max_length=64)
    model_version_id: int = Field(foreign_key="model_version.id")
    model_name: str = Field(max_length=128)
    model_version: str = Field(max_length=64)
    digest: str = Field(max_length=64)
    slot: str = Field(max_length=16)
    select: str = Field(sa_column=Column(Text, nullable=False))
    waves: str = Field(max_length=256)
    soak: str = Field(max_length=32)
    gates: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    on_breach: str = Field(max_length=16)
    device_timeout: str = Field(max_length=32)
    max_concurrent: int | None = None
    rate: str | None = Field(default=None, max_length=64)  # --rate N/min (migration 0014)
    ramp: str | None = Field(default=None, max_length=64)  # --ramp START/min,xFACTOR,every=K
    previous: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    state: str = Field(default="pending", max_length=16, index=True)
    state_json: str = Field(sa_column=Column(Text, nullable=False))
    revision: int = 0
    created_by: str = Field(default="", max_length=128)
    created_at: float = 0.0
    updated_at: float = 0.0
    archived_at: float | None = None  # its members moved to rollout_member_archive (archive.py, 0020)


class RolloutMember(SQLModel, table=True):
    __tablename__ = "rollout_member"
    __table_args__ = (Index("ix_rollout_member_device", "device_id"),)

    rollout_id: str = Field(primary_key=True, foreign_key="rollout.id", max_length=64)
    device_id: str = Field(primary_key=True, max_length=128)
    wave: int
    assigned_at: float
    dispatched_at: float | None = None
    previous: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    reverted_at: float | None = None
    timed_out_at: float | None = None
    seen_phase: str | None = Field(default=None, max_length=16)
    seen_target: str | None = Field(default=None, max_length=64)
    phase_since: float | None = None
    frames: int = 0
    errors: int = 0
    nan_outputs: int = 0
    candidate_p99_ms: float | None = None
    candidate_periods: int = 0
    baseline_p99_ms: float | None = None
    baseline_periods: int = 0
    agreement: float | None = None
    agreement_frames: int = 0


class RolloutEvent(SQLModel, table=True):
    __tablename__ = "rollout_event"
    __table_args__ = (Index("ix_rollout_event_rollout", "rollout_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: str = Field(max_length=64)
    at: float
    level: str = Field(default="info", max_length=16)
    kind: str = Field(default="log", max_length=16)  # log | gates | command
    message: str = Field(sa_column=Column(Text, nullable=False))
    data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ControllerLease(SQLModel, table=True):
    __tablename__ = "controller_lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: float = 0.0


class ReconcileDirty(SQLModel, table=True):
    """A device whose planner-relevant state changed since the reconciler last looked
    (migration 0020, ``rollout/dirty.py``); ``version`` grows with every new mark."""

    __tablename__ = "reconcile_dirty"

    device_id: str = Field(primary_key=True, max_length=128)
    version: int = 1


#: The member rows of finished rollouts (archive.py): RolloutMember's columns, plus when moved.
rollout_member_archive = Table(
    "rollout_member_archive", SQLModel.metadata,
    *(c._copy() for c in RolloutMember.__table__.columns),  # type: ignore[attr-defined]
    Column("archived_at", Float, nullable=False),
)
