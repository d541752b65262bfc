"""Signed webhooks: facts enqueued in their own transaction, delivered by a worker.

Public surface: ``enqueue`` (for a fact's writer), ``WebhookWorker`` (the controller
starts one), ``verify`` / ``signature_header`` (what a receiver checks), the receiver
management functions in ``service`` and the tables. See docs in ``signing.py`` for the
signature, ``worker.py`` for delivery, ``watchers.py`` for duration/aggregate events.
"""

from . import service
from .service import enqueue, on_rollout_state
from .signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENT_TYPES,
    SIGNATURE_HEADER,
    SignatureError,
    signature_header,
    verify,
)
from .tables import Webhook, WebhookDelivery, WebhookOutbox, WebhookWatch

__all__ = [
    "DELIVERY_HEADER", "EVENT_HEADER", "EVENT_TYPES", "SIGNATURE_HEADER", "SignatureError", "Webhook",
    "WebhookDelivery", "WebhookOutbox", "WebhookWatch", "enqueue", "on_rollout_state", "service",
    "signature_header", "verify",
]
