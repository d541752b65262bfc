"""/api/v1/webhooks — signed webhooks: receivers, their deliveries, tests and redelivery (admin).

The secret is returned once, by ``POST /webhooks``; no other route returns it and the
audit entry redacts it. See cloud/webhooks for signing, delivery and the event types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ...webhooks import EVENT_TYPES, service
from ...webhooks.signing import PATTERN
from ...webhooks.tables import Webhook, WebhookDelivery
from ..deps import Admin, ControllerDep, SessionDep
from .models import ErrorBody

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

WEBHOOK_ID = r"^wh_[0-9a-f]{1,24}$"
DELIVERY_ID = r"^dlv_[0-9a-f]{1,24}$"
WebhookIdParam = Annotated[str, Path(pattern=WEBHOOK_ID, max_length=27, description="webhook id (wh_…)")]
DeliveryIdParam = Annotated[str, Path(pattern=DELIVERY_ID, max_length=28, description="delivery id (dlv_…)")]
EventPattern = Annotated[str, Field(pattern=PATTERN, max_length=64)]
DeliveryState = Literal["pending", "delivered", "failed"]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "bad input (URL refused by the SSRF rules, unknown event, bad secret)",
            401: "no or invalid token", 403: "needs the admin role", 404: "no such webhook or delivery",
            409: "conflict", 422: "the request does not match the schema"}
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


class WebhookCreate(BaseModel):
    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://", description="http:// or https:// URL")
    events: list[EventPattern] = Field(min_length=1, max_length=32,
                                       description=f"event types or patterns (rollout.*); types: {', '.join(EVENT_TYPES)}")
    secret: str | None = Field(default=None, min_length=16, max_length=256,
                               description="signing secret; generated (and returned once) when absent")
    description: str = Field(default="", max_length=256)


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, h: Webhook) -> WebhookPublic:
        return cls(id=h.id, url=h.url, events=list(h.events), description=h.description,
                   created_by=h.created_by, created_at=h.created_at)


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="the signing secret: shown this once, never again")


class AttemptPublic(BaseModel):
    at: float
    status_code: int | None = None
    error: str | None = None


class DeliveryPublic(BaseModel):
    id: str
    webhook_id: str
    event_id: str
    type: str
    state: DeliveryState
    attempts: int
    status_code: int | None
    error: str | None
    next_attempt_at: float | None
    created_at: datetime
    delivered_at: datetime | None
    redelivery_of: str | None
    log: list[AttemptPublic]

    @classmethod
    def of(cls, d: WebhookDelivery) -> DeliveryPublic:
        return cls(id=d.delivery_id, webhook_id=d.webhook_id, event_id=d.event_id, type=d.type,
                   state=d.state, attempts=d.attempts, status_code=d.status_code, error=d.error,  # type: ignore[arg-type]
                   next_attempt_at=d.next_attempt_at if d.state == "pending" else None, created_at=d.created_at,
                   delivered_at=d.delivered_at, redelivery_of=d.redelivery_of,
                   log=[AttemptPublic.model_validate(e) for e in d.log])


@router.post("", status_code=201, response_model=WebhookCreated, responses=_errors(400, 401, 403, 422),
             summary="Add a webhook receiver; the signing secret is returned once")
def add(body: WebhookCreate, session: SessionDep, controller: ControllerDep, who: Admin) -> WebhookCreated:
    s = controller.settings
    hook, secret = service.create(session, body.url, body.events, secret=body.secret, description=body.description,
                                  actor=who.name, allow_private=s.webhook_allow_private,
                                  allow_loopback=s.webhook_allow_loopback)
    return WebhookCreated(**WebhookPublic.of(hook).model_dump(), secret=secret)


@router.get("", response_model=list[WebhookPublic], responses=_errors(401, 403), summary="Webhook receivers (no secrets)")
def list_all(session: SessionDep, _: Admin) -> list[WebhookPublic]:
    return [WebhookPublic.of(h) for h in service.list_webhooks(session)]


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=_errors(401, 403, 404, 422), summary="One receiver")
def get_one(webhook_id: WebhookIdParam, session: SessionDep, _: Admin) -> WebhookPublic:
    return WebhookPublic.of(service.get(session, webhook_id))


@router.delete("/{webhook_id}", response_model=WebhookPublic, responses=_errors(401, 403, 404, 422),
               summary="Remove a receiver with its queued and logged deliveries")
def remove(webhook_id: WebhookIdParam, session: SessionDep, _: Admin) -> WebhookPublic:
    return WebhookPublic.of(service.delete(session, webhook_id))


@router.post("/{webhook_id}/test", status_code=202, response_model=DeliveryPublic,
             responses=_errors(401, 403, 404, 422), summary="Queue a webhook.test event for this receiver")
def test(webhook_id: WebhookIdParam, session: SessionDep, controller: ControllerDep, who: Admin) -> DeliveryPublic:
    d = service.test(session, webhook_id, who.name)
    controller.webhooks.wake()
    return DeliveryPublic.of(d)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryPublic], responses=_errors(401, 403, 404, 422),
            summary="The receiver's delivery log, newest first")
def deliveries(webhook_id: WebhookIdParam, session: SessionDep, _: Admin,
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               state: Annotated[DeliveryState | None, Query()] = None) -> list[DeliveryPublic]:
    return [DeliveryPublic.of(d) for d in service.deliveries(session, webhook_id, limit=limit, state=state)]


@router.get("/deliveries/{delivery_id}", response_model=DeliveryPublic, responses=_errors(401, 403, 404, 422),
            summary="One delivery with its attempt log")
def get_delivery(delivery_id: DeliveryIdParam, session: SessionDep, _: Admin) -> DeliveryPublic:
    return DeliveryPublic.of(service.get_delivery(session, delivery_id))


@router.post("/deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryPublic,
             responses=_errors(401, 403, 404, 422), summary="Send a delivery's body again, as a new delivery")
def redeliver(delivery_id: DeliveryIdParam, session: SessionDep, controller: ControllerDep, _: Admin) -> DeliveryPublic:
    d = service.redeliver(session, delivery_id)
    controller.webhooks.wake()
    return DeliveryPublic.of(d)
