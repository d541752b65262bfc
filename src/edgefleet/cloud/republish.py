"""Re-publishing retained desired state after the broker connection comes back (issue 14).

What the broker may have lost decides what is sent:

* it resumed our MQTT 5 session (``session_present``): it is the same broker, or a
  persistent one restarted with its store — the retained ``desired`` messages are still
  there. Nothing is re-published; the sync loop re-sends only devices whose reported
  generation lags (``Controller.sync_once``).
* a new session (amqtt, a fresh or wiped broker, MQTT 3.1.1, a first connection): retained
  state may be gone, so every enrolled device's desired state is re-published — in the
  background, paced (``rate_per_s`` messages a second, in pages of ``page`` devices by id
  cursor), so ingest and the reconciler keep the database and the wire meanwhile.

``pace_delay`` is the pure pacing rule; ``Republisher`` is the I/O shell. A new connection
while a walk runs restarts it from the first device (the broker may have lost it all again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from .tables import Device

log = logging.getLogger(__name__)


def pace_delay(sent: int, started: float, now: float, rate_per_s: float) -> float:
    """Seconds to wait before message number ``sent`` (0-based) so that no more than
    ``rate_per_s`` messages a second leave on average since ``started``."""
    if rate_per_s <= 0:
        return 0.0
    return max(0.0, started + sent / rate_per_s - now)


CATCH_UP_S = 0.1  # a walk behind its schedule makes up at most this much of it in a burst


def rebase(sent: int, started: float, now: float, rate_per_s: float, *, slack_s: float = CATCH_UP_S) -> float:
    """The schedule's start for message ``sent``: unchanged while the walk is at most
    ``slack_s`` behind it, else moved so that it is that far behind — a page that took long to
    sign is not made up for with a burst at the broker (any one second sees at most
    ``rate_per_s * (1 + slack_s)`` plus one page)."""
    if rate_per_s <= 0:
        return started
    due = started + sent / rate_per_s
    return started if now - due <= slack_s else now - slack_s - sent / rate_per_s


@dataclass
class Walk:
    """One re-publish: how far it got (for logs, health and the benchmark)."""

    reason: str
    sent: int = 0
    failed: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    cancelled: bool = False


class Republisher:
    """Walks every enrolled device by id and publishes its desired state, paced.

    Args:
        session: opens a database session (one per page, closed before sleeping).
        publish: ``Controller.publish_device`` (signs if needed, sends the retained hint).
        publish_many: ``Controller.publish_devices`` (signs a batch in one transaction, then
            sends each hint; returns how many were sent); used instead of ``publish`` when given.
        rate_per_s: messages a second at most (``<= 0``: unpaced).
        page: devices read per query.
    """

    def __init__(self, session: Callable[[], Session], publish: Callable[[Session, Device], None], *,
                 publish_many: Callable[[Session, list[Device]], int] | None = None,
                 rate_per_s: float = 500.0, page: int = 200, clock: Callable[[], float] = time.monotonic):
        self.session, self.publish, self.publish_many = session, publish, publish_many
        self.rate_per_s, self.page, self.clock = rate_per_s, page, clock
        self._lock = threading.Lock()
        self._epoch = 0
        self._stop = threading.Event()
        self.last: Walk | None = None

    def stop(self) -> None:
        self._stop.set()

    def start(self, reason: str) -> threading.Thread:
        """Run a walk in a background thread (cancelling one under way)."""
        t = threading.Thread(target=self.run, args=(reason,), name="desired-republish", daemon=True)
        t.start()
        return t

    def run(self, reason: str) -> Walk:
        """One walk, on the calling thread; returns what it did."""
        with self._lock:
            self._epoch += 1
            epoch = self._epoch
        walk = Walk(reason=reason, started_at=self.clock())
        self.last = walk
        log.info("re-publishing desired state to every device (%s), %s", reason,
                 f"at most {self.rate_per_s:g}/s" if self.rate_per_s > 0 else "unpaced")
        cursor, origin = "", walk.started_at
        while True:
            with self.session() as s:
                devices = s.exec(select(Device).where(Device.revoked_at == None)  # noqa: E711
                                 .where(col(Device.id) > cursor).order_by(Device.id).limit(self.page)).all()
                step = self._step()
                for i in range(0, len(devices), step):
                    chunk = list(devices[i:i + step])
                    n, now = walk.sent + walk.failed, self.clock()
                    origin = rebase(n, origin, now, self.rate_per_s)
                    wait = pace_delay(n, origin, now, self.rate_per_s)
                    if (wait > 0 and self._stop.wait(wait)) or self._stop.is_set() or self._epoch != epoch:
                        walk.cancelled = True
                        log.info("re-publish (%s) stopped after %d devices", reason, walk.sent)
                        return walk
                    self._send(s, chunk, walk)
                    cursor = chunk[-1].id
            if len(devices) < self.page:
                break
        walk.finished_at = self.clock()
        log.info("desired state re-published to %d devices in %.1fs (%s; %d failed)", walk.sent,
                 walk.finished_at - walk.started_at, reason, walk.failed)
        return walk

    def _step(self) -> int:
        """Devices per send: one at a time unpaced or without a batch publisher, else about a
        tenth of a second's worth (signed together, then sent)."""
        if self.publish_many is None or self.rate_per_s <= 0:
            return 1 if self.publish_many is None else self.page
        return max(1, min(self.page, int(self.rate_per_s / 10)))

    def _send(self, s: Session, chunk: list[Device], walk: Walk) -> None:
        if self.publish_many is not None:
            try:
                sent = self.publish_many(s, chunk)
            except Exception:  # the sync loop re-sends them once they report a lag
                sent = 0
                log.exception("re-publishing desired state to devices %s … %s failed", chunk[0].id, chunk[-1].id)
            walk.sent += sent
            walk.failed += len(chunk) - sent
            return
        for device in chunk:
            try:
                self.publish(s, device)
                walk.sent += 1
            except Exception:
                walk.failed += 1
                log.exception("re-publishing desired state to device %s failed", device.id)
