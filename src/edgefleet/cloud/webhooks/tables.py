"""Tables of signed webhooks (migration 0012_webhooks_history).

* ``Webhook`` — a receiver: URL, event patterns, the signing secret (the controller needs
  the plaintext to sign; it never leaves the database after creation), and the claim one
  controller replica holds while it delivers to it (one delivery in flight per webhook).
* ``WebhookOutbox`` — facts waiting to be fanned out: one row inserted in the same
  transaction as the fact (``enqueue``), turned into one delivery per subscribed webhook
  by the worker, then deleted.
* ``WebhookDelivery`` — one event for one webhook: the exact body sent, its state
  (``pending`` → ``delivered`` | ``failed``), attempts, the last status code or error,
  when to try next, and the attempt log (bounded). Redelivery makes a new row.
* ``WebhookWatch`` — small per-key state of the watchers (offline devices already
  announced, drift breaches open, the capture cursor).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Webhook(SQLModel, table=True):
    __tablename__ = "webhook"

    id: str = Field(primary_key=True, max_length=32)
    url: str = Field(max_length=2048)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=256)
    description: str = Field(default="", max_length=256)
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: float | None = None


class WebhookOutbox(SQLModel, table=True):
    __tablename__ = "webhook_outbox"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=40)
    type: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_queue", "webhook_id", "state", "id"),
                      Index("ix_webhook_delivery_state", "state", "next_attempt_at"))

    id: int | None = Field(default=None, primary_key=True)  # order of creation = order of delivery
    delivery_id: str = Field(max_length=40, unique=True)  # X-Edgefleet-Delivery
    webhook_id: str = Field(max_length=32)
    event_id: str = Field(max_length=40)
    type: str = Field(max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default="pending", max_length=16)  # pending | delivered | failed
    attempts: int = 0
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=512)
    next_attempt_at: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
    redelivery_of: str | None = Field(default=None, max_length=40)
    log: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class WebhookWatch(SQLModel, table=True):
    __tablename__ = "webhook_watch"

    key: str = Field(primary_key=True, max_length=256)
    value: str = Field(default="", max_length=256)
    updated_at: datetime = Field(default_factory=utcnow)
