"""Campaign tables (migration 0019_campaigns): one row per campaign, one per capture counted.

``Campaign`` holds what the operator asked for (selector and condition as text, the
condition's AST, the ``like`` embedding) and where it stands (``state``); a restarted
controller rebuilds every device's campaigns from here. ``CampaignCapture`` is one row per
capture a device reported for a campaign (unique per device and event), so a capture seen
both on MQTT and in its upload is counted once, and the fleet's progress is a ``COUNT``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from ..tables import utcnow

RUNNING = "running"
COMPLETED = "completed"  # the fleet quota is met
STOPPED = "stopped"  # an operator stopped it
ENDED = "ended"  # its --until passed
STATES = (RUNNING, COMPLETED, STOPPED, ENDED)


class Campaign(SQLModel, table=True):
    __tablename__ = "capture_campaign"

    name: str = Field(primary_key=True, max_length=64)
    selector: str = Field(max_length=1000)
    condition_text: str = Field(default="", max_length=1000)
    condition: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    like: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    quota: int
    per_device_quota: int
    max_per_minute: int = 30
    priority: int = 25
    pre_seconds: float = 1.0
    post_seconds: float = 0.5
    frames_only: bool = False
    state: str = Field(default=RUNNING, max_length=16, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = Field(default="", max_length=128)
    ends_at: datetime | None = None
    finished_at: datetime | None = None
    finished_by: str = Field(default="", max_length=128)


class CampaignCapture(SQLModel, table=True):
    __tablename__ = "capture_campaign_capture"
    __table_args__ = (
        UniqueConstraint("campaign", "device_id", "event_id", name="uq_campaign_capture"),
        Index("ix_campaign_capture_campaign_device", "campaign", "device_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(max_length=64)
    device_id: str = Field(max_length=128)
    event_id: str = Field(max_length=64)
    received_at: datetime = Field(default_factory=utcnow)
