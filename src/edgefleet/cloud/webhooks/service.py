"""Webhooks on the controller's side of a transaction: enqueue facts, manage receivers.

``enqueue(session, type, data)`` is what a fact's writer calls (rollout state changes in
``rollout/store.write_state``, stale devices in ``freshness.mark_stale``, the watchers):
it adds one ``WebhookOutbox`` row to the caller's transaction and returns — no network,
no lookup of receivers, so a slow or dead receiver can never hold up the control path.
The worker (``worker.py``) fans rows out into deliveries after they committed.

Receivers: ``create`` (URL checked against SSRF rules, events checked against the known
types, a secret made unless one is given), ``list_webhooks``, ``delete``, ``test`` (one
``webhook.test`` delivery), ``deliveries`` and ``redeliver`` (a new delivery, same body).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlmodel import Session, col, select

from ..errors import BadRequest, NotFound
from .signing import check_patterns, check_url, new_secret
from .tables import Webhook, WebhookDelivery, WebhookOutbox

MAX_DATA_BYTES = 16 * 1024
SECRET_MIN, SECRET_MAX = 16, 256


def _now() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def payload(event_id: str, event_type: str, at: datetime, data: dict[str, Any]) -> str:
    """The JSON body a receiver gets (sorted keys, compact): id, type, time, data."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return json.dumps({"id": event_id, "type": event_type, "time": at.astimezone(timezone.utc).isoformat(),
                       "data": data}, sort_keys=True, separators=(",", ":"), default=str)


def enqueue(session: Session, event_type: str, data: dict[str, Any], *, at: datetime | None = None) -> str:
    """Add one event to the caller's transaction (one INSERT); returns its event id."""
    text = json.dumps(data, default=str)
    if len(text) > MAX_DATA_BYTES:
        data = {"truncated": True, "keys": sorted(data)[:50]}
    event_id = new_id("evt")
    session.add(WebhookOutbox(event_id=event_id, type=event_type, at=at or _now(), data=json.loads(json.dumps(data, default=str))))
    return event_id


# ----- rollout state changes → events (pure) ---------------------------------------------------

_STATE_EVENTS = {
    "paused": "rollout.paused", "breached": "rollout.breached", "rolled_back": "rollout.rolled_back",
    "completed": "rollout.completed", "aborted": "rollout.aborted",
}


def rollout_event_types(old_state: str, old_wave: int, new_state: str, new_wave: int, started: bool) -> list[str]:
    """Events for one rollout state write: started (first time it leaves pending), wave
    advanced, and entering paused/breached/rolled_back/completed/aborted."""
    out = []
    if old_state == "pending" and new_state != "pending" and started:
        out.append("rollout.started")
    if new_wave > old_wave and new_state not in ("rolled_back", "aborted", "superseded"):
        out.append("rollout.wave_advanced")
    if new_state != old_state and new_state in _STATE_EVENTS:
        out.append(_STATE_EVENTS[new_state])
    return out


def on_rollout_state(session: Session, row: Any, old: Any, new: Any) -> None:
    """Called by ``rollout.store.write_state`` in its transaction (``row`` is the rollout)."""
    types = rollout_event_types(old.state, old.current_wave, new.state, new.current_wave,
                                started=new.started_at is not None or new.state != "pending")
    for t in types:
        data: dict[str, Any] = {
            "rollout": row.id, "model": f"{row.model_name}:{row.model_version}", "slot": row.slot,
            "state": new.state, "previous_state": old.state, "wave": new.current_wave,
        }
        if new.reason:
            data["reason"] = str(new.reason)[:500]
        if t == "rollout.breached" and new.breach is not None:
            data["breach"] = new.breach.model_dump(mode="json")
        enqueue(session, t, data)


# ----- receivers -------------------------------------------------------------------------------


def create(session: Session, url: str, events: list[str], *, secret: str | None = None, description: str = "",
           actor: str = "", allow_private: bool = False, allow_loopback: bool = False) -> tuple[Webhook, str]:
    """A new receiver and its secret (the only time the secret is returned). Commits.

    Raises:
        BadRequest: URL refused, unknown events, secret too short or long.
    """
    check_url(url, allow_private=allow_private, allow_loopback=allow_loopback)
    patterns = check_patterns(events)
    if secret is None:
        secret = new_secret()
    elif not (SECRET_MIN <= len(secret) <= SECRET_MAX) or not secret.isprintable() or secret != secret.strip():
        raise BadRequest(f"webhook secret must be {SECRET_MIN}–{SECRET_MAX} printable characters without surrounding spaces")
    hook = Webhook(id=new_id("wh")[:27], url=url, events=patterns, secret=secret, description=description, created_by=actor)
    session.add(hook)
    session.commit()
    return hook, secret


def get(session: Session, webhook_id: str) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None:
        raise NotFound(f"no webhook {webhook_id!r}")
    return hook


def list_webhooks(session: Session) -> list[Webhook]:
    return list(session.exec(select(Webhook).order_by(col(Webhook.created_at))).all())


def delete(session: Session, webhook_id: str) -> Webhook:
    """Remove a receiver and its queued and logged deliveries. Commits."""
    hook = get(session, webhook_id)
    session.execute(sql_delete(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook_id))
    session.delete(hook)
    session.commit()
    return hook


def add_delivery(session: Session, hook: Webhook, event_id: str, event_type: str, body: str, *,
                 redelivery_of: str | None = None) -> WebhookDelivery:
    d = WebhookDelivery(delivery_id=new_id("dlv"), webhook_id=hook.id, event_id=event_id, type=event_type,
                        body=body, redelivery_of=redelivery_of)
    session.add(d)
    return d


def test(session: Session, webhook_id: str, actor: str = "") -> WebhookDelivery:
    """Queue a ``webhook.test`` event for this receiver only. Commits."""
    hook = get(session, webhook_id)
    event_id = new_id("evt")
    body = payload(event_id, "webhook.test", _now(), {"webhook": hook.id, "by": actor})
    d = add_delivery(session, hook, event_id, "webhook.test", body)
    session.commit()
    return d


def deliveries(session: Session, webhook_id: str, *, limit: int = 50, state: str | None = None) -> list[WebhookDelivery]:
    get(session, webhook_id)
    q = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if state:
        q = q.where(WebhookDelivery.state == state)
    return list(session.exec(q.order_by(col(WebhookDelivery.id).desc()).limit(limit)).all())


def get_delivery(session: Session, delivery_id: str) -> WebhookDelivery:
    d = session.exec(select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id)).first()
    if d is None:
        raise NotFound(f"no webhook delivery {delivery_id!r}")
    return d


def redeliver(session: Session, delivery_id: str) -> WebhookDelivery:
    """A new delivery of the same body (same event id) to the same receiver. Commits."""
    old = get_delivery(session, delivery_id)
    hook = get(session, old.webhook_id)
    d = add_delivery(session, hook, old.event_id, old.type, old.body, redelivery_of=old.delivery_id)
    session.commit()
    return d
