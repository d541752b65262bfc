"""The webhook worker: a thread in the controller that fans out, delivers and watches.

One pass (every ``webhook_poll_s``, or at once after ``wake()``):

    fan out   outbox rows → one ``WebhookDelivery`` per subscribed receiver (the row is
              deleted in the same transaction; a replica that lost the race skips it)
    watch     (lease holder only) offline devices, drift per control model version,
              new captures per pair — each enqueues events like any other fact
    dispatch  per receiver with a due delivery and no delivery in flight: claim it
              (``Webhook.claimed_until``, so two replicas never deliver to one receiver
              at once) and hand it to a small thread pool

A pool thread delivers that receiver's deliveries oldest first, one at a time, until one
fails (it is retried after an exponential backoff with jitter, and nothing newer for that
receiver goes first: order is kept) or none is left. httpx with short timeouts; no
redirects; the resolved address is checked again against the SSRF rules. A receiver that
is slow or down holds one pool thread at most for its timeout; other receivers and the
control path do not wait for it.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from ... import __version__
from ..errors import BadRequest
from ..settings import CloudSettings
from . import service
from .signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    check_address,
    signature_header,
    subscribed,
)
from .tables import Webhook, WebhookDelivery, WebhookOutbox, WebhookWatch

log = logging.getLogger(__name__)

MAX_LOG = 20
WATCH_LEASE = "webhook-watchers"


def retry_delay(attempts: int, base_s: float, max_s: float, rnd: Callable[[], float] = random.random) -> float:
    """Seconds before attempt ``attempts + 1``: ``base·2^(attempts-1)`` capped at ``max_s``,
    with full jitter over its upper half (so receivers that come back are not stampeded)."""
    delay = min(max_s, base_s * (2 ** max(0, attempts - 1)))
    return delay * (0.5 + 0.5 * rnd())


class WebhookWorker:
    def __init__(self, engine: Engine, settings: CloudSettings, *, holder: str,
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None):
        self.engine = engine
        self.settings = settings
        self.holder = holder
        self.clock = clock
        self._transport = transport
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._next_watch: dict[str, float] = {}
        self._next_prune = 0.0

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ----- lifecycle -----

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.settings.webhook_workers, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._loop, name="webhook-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self._kick.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(self.settings.webhook_poll_s)
            self._kick.clear()
            if self._stop.is_set():
                break
            try:
                self.run_once()
            except Exception:
                log.exception("webhook pass failed; retrying")
                self._stop.wait(1.0)

    def run_once(self) -> None:
        now = self.clock()
        self.fan_out()
        self.watch(now)
        self.dispatch(now)
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self.prune(now)

    # ----- fan out -----

    def fan_out(self, limit: int = 500) -> int:
        """Outbox rows → deliveries; returns how many deliveries were made."""
        made = 0
        with self.session() as s:
            rows = s.exec(select(WebhookOutbox).order_by(col(WebhookOutbox.id)).limit(limit)).all()
            if not rows:
                return 0
            hooks = service.list_webhooks(s)
            for row in rows:
                gone = s.execute(sql_delete(WebhookOutbox).where(col(WebhookOutbox.id) == row.id))
                if gone.rowcount != 1:  # type: ignore[attr-defined]  # another replica took it
                    continue
                body = None
                for hook in hooks:
                    if subscribed(hook.events, row.type):
                        body = body or service.payload(row.event_id, row.type, row.at, row.data)
                        service.add_delivery(s, hook, row.event_id, row.type, body)
                        made += 1
            s.commit()
        return made

    # ----- dispatch and delivery -----

    def dispatch(self, now: float) -> int:
        with self.session() as s:
            due = s.exec(select(WebhookDelivery.webhook_id).where(WebhookDelivery.state == "pending")
                         .where(col(WebhookDelivery.next_attempt_at) <= now).distinct()).all()
        started = 0
        for webhook_id in due:
            with self._lock:
                if webhook_id in self._busy:
                    continue
            if not self._claim(webhook_id, now):
                continue
            with self._lock:
                self._busy.add(webhook_id)
            assert self._pool is not None
            try:
                self._pool.submit(self._drain, webhook_id)
            except RuntimeError:  # shutting down
                with self._lock:
                    self._busy.discard(webhook_id)
                return started
            started += 1
        return started

    def _claim_ttl(self) -> float:
        return 3 * self.settings.webhook_timeout_s + 10

    def _claim(self, webhook_id: str, now: float) -> bool:
        with self.session() as s:
            result = s.execute(
                update(Webhook).where(col(Webhook.id) == webhook_id)
                .where(col(Webhook.claimed_until).is_(None) | (col(Webhook.claimed_until) < now)
                       | (col(Webhook.claimed_by) == self.holder))
                .values(claimed_by=self.holder, claimed_until=now + self._claim_ttl()))
            s.commit()
            return result.rowcount == 1  # type: ignore[attr-defined]

    def _release(self, webhook_id: str) -> None:
        with self.session() as s:
            s.execute(update(Webhook).where(col(Webhook.id) == webhook_id).where(col(Webhook.claimed_by) == self.holder)
                      .values(claimed_by=None, claimed_until=None))
            s.commit()

    def _drain(self, webhook_id: str) -> None:
        try:
            while not self._stop.is_set():
                now = self.clock()
                with self.session() as s:
                    hook = s.get(Webhook, webhook_id)
                    head = s.exec(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                  .where(WebhookDelivery.state == "pending")
                                  .order_by(col(WebhookDelivery.id)).limit(1)).first()
                if hook is None or head is None or head.next_attempt_at > now:
                    return
                if not self._claim(webhook_id, now):  # renew; lost only if we overran the claim
                    return
                if not self._attempt(hook, head):
                    return
        except Exception:
            log.exception("webhook %s: delivery loop failed", webhook_id)
        finally:
            self._release(webhook_id)
            with self._lock:
                self._busy.discard(webhook_id)

    def _attempt(self, hook: Webhook, d: WebhookDelivery) -> bool:
        """One POST of ``d``; records the outcome. True when delivered (2xx)."""
        status, error = self.send(hook, d)
        now = self.clock()
        ok = status is not None and 200 <= status < 300
        attempts = d.attempts + 1
        entry = {"at": now, "status_code": status, "error": error}
        values: dict[str, Any] = {"attempts": attempts, "status_code": status, "error": error,
                                  "log": (list(d.log) + [entry])[-MAX_LOG:]}
        if ok:
            values.update(state="delivered", delivered_at=datetime.now(timezone.utc))
        elif attempts >= self.settings.webhook_max_attempts:
            values.update(state="failed")
            log.warning("webhook %s: delivery %s failed after %d attempts (%s)", hook.id, d.delivery_id,
                        attempts, error or f"HTTP {status}")
        else:
            values["next_attempt_at"] = now + retry_delay(attempts, self.settings.webhook_retry_base_s,
                                                          self.settings.webhook_retry_max_s)
        with self.session() as s:
            s.execute(update(WebhookDelivery).where(col(WebhookDelivery.id) == d.id).values(**values))
            s.commit()
        return ok or values.get("state") == "failed"  # a failed one no longer blocks the next

    def send(self, hook: Webhook, d: WebhookDelivery) -> tuple[int | None, str | None]:
        """POST the delivery; (status code, None) or (None, error text). Never raises."""
        body = d.body.encode()
        try:
            self._check_resolved(hook.url)
        except BadRequest as exc:
            return None, f"refused: {exc}"[:500]
        headers = {
            "Content-Type": "application/json", "User-Agent": f"edgefleet-webhooks/{__version__}",
            EVENT_HEADER: d.type, DELIVERY_HEADER: d.delivery_id,
            SIGNATURE_HEADER: signature_header(hook.secret, body, int(self.clock())),
        }
        t = self.settings.webhook_timeout_s
        try:
            with httpx.Client(timeout=httpx.Timeout(t, connect=min(t, 3.0)), follow_redirects=False,
                              transport=self._transport, trust_env=False) as client:
                r = client.post(hook.url, content=body, headers=headers)
            return r.status_code, None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
        except httpx.TimeoutException:
            return None, f"timed out after {t:g}s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]

    def _check_resolved(self, url: str) -> None:
        s = self.settings
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
        except OSError as exc:
            raise BadRequest(f"cannot resolve {host}: {exc}") from None
        for info in infos:
            addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            check_address(addr, allow_private=s.webhook_allow_private, allow_loopback=s.webhook_allow_loopback)

    # ----- watchers -----

    def _subscribers(self, s: Session, event_type: str) -> bool:
        return any(subscribed(h.events, event_type) for h in service.list_webhooks(s) if event_type != "webhook.test")

    def _due(self, name: str, now: float, every: float) -> bool:
        if now < self._next_watch.get(name, 0.0):
            return False
        self._next_watch[name] = now + every
        return True

    def watch(self, now: float) -> None:
        from .watchers import watch_captures, watch_drift, watch_offline

        st = self.settings
        jobs = [("device.offline", 5.0, watch_offline), ("drift.breach", st.webhook_drift_interval_s, watch_drift),
                ("capture.new", st.webhook_capture_batch_s, watch_captures)]
        due = [(t, fn) for t, every, fn in jobs if self._due(t, now, every)]
        if not due:
            return
        from ..rollout.store import acquire_lease

        with self.session() as s:
            if not acquire_lease(s, WATCH_LEASE, self.holder, max(30.0, 3 * st.webhook_capture_batch_s), now):
                return
            for event_type, fn in due:
                try:
                    fn(s, st, datetime.fromtimestamp(now, timezone.utc), emit=self._subscribers(s, event_type))
                    s.commit()
                except Exception:
                    s.rollback()
                    log.exception("webhook watcher %s failed", event_type)

    # ----- housekeeping -----

    def prune(self, now: float, keep_days: float = 30.0) -> int:
        cutoff = datetime.fromtimestamp(now, timezone.utc) - timedelta(days=keep_days)
        with self.session() as s:
            r = s.execute(sql_delete(WebhookDelivery).where(col(WebhookDelivery.state) != "pending")
                          .where(col(WebhookDelivery.created_at) < cutoff))
            s.commit()
            return int(r.rowcount or 0)  # type: ignore[attr-defined]


def queue_depth(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(WebhookDelivery)
                            .where(WebhookDelivery.state == "pending")).one())


def watch_value(session: Session, key: str) -> str | None:
    row = session.get(WebhookWatch, key)
    return row.value if row is not None else None


def set_watch(session: Session, key: str, value: str) -> None:
    row = session.get(WebhookWatch, key) or WebhookWatch(key=key)
    row.value, row.updated_at = value, datetime.now(timezone.utc)
    session.add(row)
