"""The controller's MQTT bridge: ingest device messages, publish desired state.

Subscribes to ``status``, ``reported``, ``telemetry`` and ``events`` of every device
(``$share/controllers/...`` on MQTT 5 so replicas split the load). Each message is
checked in order — topic shape, size, schema, device id in the payload equals the id in
the topic — and only then applied. Anything that fails is counted under its outcome and
logged with the device id (rate-limited: the first of each device and outcome, then one
summary line per interval, ``log_summary.SummaryLog``); nothing a device sends can stop the
bridge.

Nothing is acknowledged before it is stored. paho's network thread only queues a message;
the ``bridge-ingest`` thread applies it and acknowledges it (``manual_ack``) after its
effect is committed. When the database cannot be reached (``db.is_unavailable``) the
message is *not* acknowledged: the thread retries the same message with exponential
backoff (``retry_initial_s`` doubling up to ``retry_max_s``), one rate-limited log line,
no CPU spin, and the broker holds the rest (MQTT 5: the controller's Receive Maximum caps
the unacknowledged messages in flight). A payload that is bad in itself (invalid, spoofed,
refused, or an error that is not an outage) is acknowledged and counted: it never blocks
the topic. With MQTT 5 the session is persistent (clean start off, ``session_expiry_s``),
so the broker queues QoS 1 messages while the controller is down or reconnecting; a
message taken from an earlier connection is applied but not acknowledged (the broker
redelivers it, and a redelivered report is refused as a replay by its signed seq).

``_on_message`` catches every exception, so no payload can end paho's network thread. A
watchdog checks that the thread still consumes: every ``probe_interval_s`` it publishes a
small probe to ``fleet/v1/controllers/<client id>/ping`` (a topic only the controller may
use), which the bridge subscribes to; a probe not delivered back within
``probe_timeout_s``, or a network thread that is gone, makes ``ingest_alive()`` false and
``/api/v1/health`` answer 503 ``degraded``. A retained payload that fails validation is
counted and skipped; on ``status`` the bridge clears it (empty retained payload), so a
restart does not meet it again.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..protocols import (
    NAMESPACE,
    RULES,
    Channel,
    Desired,
    InvalidPayload,
    InvalidTopic,
    decode,
    desired_topic,
    encode,
    parse_topic,
    subscription,
)
from .db import is_conflict, is_unavailable
from .errors import DatabaseUnavailable
from .log_summary import SummaryLog

log = logging.getLogger(__name__)

INGESTED = (Channel.STATUS, Channel.REPORTED, Channel.TELEMETRY, Channel.EVENTS)
Handler = Callable[[Any], None]
# applies decoded messages in one transaction; one result each: None, a refusal (``outcome``) or the error
BatchHandler = Callable[[list[Any]], list[BaseException | None]]
BATCHED = frozenset({Channel.STATUS.value, Channel.REPORTED.value, Channel.TELEMETRY.value})
# Outcomes that say the payload itself is bad (not a transient failure to apply it): such a
# payload retained on a status topic is cleared.
POISON = frozenset({"invalid", "spoofed"})
DEFAULT_SESSION_EXPIRY_S = 86400.0


@dataclass(frozen=True)
class _Inbound:
    """A message taken off the wire, waiting to be applied (and then acknowledged)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    connection: int  # which connection it arrived on (an ack is only valid on that one)


#: refusals logged once for the fleet (then a summary a minute), not once per device: after a
#: reconnect the broker redelivers every message the controller had applied but not yet
#: acknowledged, each refused as a replay of itself (10,001 lines at 100,000 devices)
FLEET_LOGGED = frozenset({"replayed"})
QOS1_CAP_FACTOR = 100  # MQTT 5: QoS 1 queued beyond 100 x queue_size waits (a memory bound, not flow control)


def _log_key(device_id: str, outcome: str) -> str:
    return "*" if outcome in FLEET_LOGGED else device_id


def probe_topic(client_id: str) -> str:
    """The watchdog's own topic: under ``fleet/v1/`` (the controller's ACL), never a device's."""
    safe = "".join("_" if c in "/+#" else c for c in client_id) or "controller"
    return f"{NAMESPACE}/controllers/{safe}/ping"


@dataclass(frozen=True)
class BridgeTls:
    """TLS to the broker: verify it against ``ca_file`` (system CAs when None), host name checked;
    ``cert_file``/``key_file`` when the broker requires a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MqttBridge:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        handlers: dict[Channel, Handler],
        client_id: str = "edgefleet-controller",
        protocol: str = "3.1.1",
        username: str | None = None,
        password: str | None = None,
        on_connected: Callable[[], None] | None = None,
        probe_interval_s: float = 5.0,
        probe_timeout_s: float = 10.0,
        tls: BridgeTls | None = None,
        session_expiry_s: float = DEFAULT_SESSION_EXPIRY_S,
        receive_maximum: int = 64,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        queue_size: int = 1000,
        log_interval_s: float = 60.0,
        batch_handler: BatchHandler | None = None,
        batch_max: int = 256,
        batch_wait_s: float = 0.02,
    ):
        self.host, self.port = host, port
        self.handlers = handlers
        self.counters: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._on_connected = on_connected
        self._v5 = protocol == "5"
        self.connected = threading.Event()
        self._stopping = False
        # watchdog (times are time.monotonic())
        self.probe_topic = probe_topic(client_id)
        self.probe_interval_s, self.probe_timeout_s = probe_interval_s, probe_timeout_s
        self.last_message_at: float | None = None  # last device message taken off the wire
        self.last_probe_rtt_s: float | None = None
        self._probe_seq = 0
        self._probe_sent: dict[int, float] = {}  # probes not delivered back yet
        self._started = False
        self._watch_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        # ingest: paho's thread queues, the ingest thread applies, then acknowledges
        self.client_id = client_id
        self.session_expiry_s, self.receive_maximum = session_expiry_s, receive_maximum
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        # Unbounded as a queue, bounded by who may add: QoS 0 while fewer than ``queue_size`` wait
        # (else dropped), QoS 1 always under MQTT 5 — the broker sends at most Receive Maximum
        # unacknowledged ones, and we acknowledge only after the commit. paho's network thread
        # must never block here: while it waits it sends no acknowledgement and no PINGREQ, and
        # the broker drops the connection (seen at 100,000 devices: a disconnect a minute).
        self.queue_size = queue_size
        self._inbox: queue.Queue[_Inbound] = queue.Queue()
        self._queued_qos1 = 0  # of the queue: QoS 1 (the rest QoS 0)
        self._ingest_thread: threading.Thread | None = None
        self._ingest_stop = threading.Event()
        self._connection = 0  # grows with every successful connect
        self.session_present: bool | None = None
        self.busy_since: float | None = None  # monotonic: applying the current message since
        self.db_unavailable_since: float | None = None  # monotonic: retrying on a database outage since
        self.db_outages = 0
        self._last_db_error: BaseException | None = None
        self.warnings = SummaryLog(log, interval_s=log_interval_s)
        # group commit (cloud/devices/batch.py): status/reported/telemetry taken together
        self.batch_handler, self.batch_max, self.batch_wait_s = batch_handler, max(1, batch_max), batch_wait_s
        self._batch_stands_in = {c: h for c, h in handlers.items() if c.value in BATCHED}
        self._in_hand = 0  # messages taken off the queue and not yet acknowledged
        self.batches = 0
        self.batched_messages = 0
        if self._v5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
        else:  # MQTT 3.1.1 (amqtt): a clean session, still acknowledged only after the commit
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True,
                manual_ack=True,
            )
        if username:
            self.client.username_pw_set(username, password)
        self.tls = tls
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                                certfile=str(tls.cert_file) if tls.cert_file else None,
                                keyfile=str(tls.key_file) if tls.key_file else None)
        elif not is_loopback(host):
            log.warning("controller bridge talks plain MQTT to %s:%d: credentials and messages cross in clear "
                        "(set mqtt_tls; docs/tls.md)", host, port)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # ----- lifecycle -----

    def start(self, wait: float = 10.0) -> None:
        self._ingest_stop.clear()
        self._ingest_thread = threading.Thread(target=self._ingest_loop, name="bridge-ingest", daemon=True)
        self._ingest_thread.start()
        if self._v5:  # persistent session: the broker queues QoS 1 messages while we are away
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(self.session_expiry_s)
            props.ReceiveMaximum = self.receive_maximum
            self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        else:
            self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        self._watch_stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="bridge-watchdog", daemon=True)
        self._watchdog.start()
        if wait and not self.connected.wait(wait):
            log.warning("MQTT broker %s:%d not reachable yet; will keep retrying", self.host, self.port)

    def stop(self, *, end_session: bool = False) -> None:
        """Stop taking messages, apply what was queued (a few seconds at most), disconnect.

        Messages still unapplied stay unacknowledged: a persistent session gets them again.
        ``end_session`` (MQTT 5): end the broker session too, so the shared subscription's
        messages go to the other replicas instead of waiting for this one."""
        self._stopping = True
        self._watch_stop.set()
        if end_session and self._v5 and self.connected.is_set():
            self._hand_over()
        self._ingest_stop.set()
        if self._ingest_thread is not None:
            self._ingest_thread.join(timeout=5)
        if end_session and self._v5:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            self.client.disconnect(properties=props)
        else:
            self.client.disconnect()
        self.client.loop_stop()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        self.warnings.flush()

    def _hand_over(self, timeout: float = 5.0) -> None:
        """Leave the shared subscriptions (the broker sends the group's messages to the other
        replicas from now on), then apply and acknowledge what is already here, so nothing is
        in flight when the session ends."""
        try:
            self.client.unsubscribe([subscription(channel, shared=True) for channel in INGESTED])
        except Exception:
            log.debug("unsubscribe before hand-over failed", exc_info=True)
            return
        deadline = time.monotonic() + timeout
        time.sleep(0.3)  # the UNSUBACK, and whatever the broker sent before it
        while time.monotonic() < deadline and (self.backlog or self.busy_since is not None):
            time.sleep(0.05)

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connect refused: %s", reason)
            return
        for channel in INGESTED:
            client.subscribe(subscription(channel, shared=self._v5), qos=1)
        client.subscribe(self.probe_topic, qos=0)
        with self._lock:
            self._probe_sent.clear()  # probes sent on an earlier connection are lost with it
            self._connection += 1
        self.session_present = bool(getattr(_flags, "session_present", False))
        self.connected.set()
        log.info("controller bridge connected to %s:%d as %s (MQTT %s%s%s)", self.host, self.port, self.client_id,
                 "5" if self._v5 else "3.1.1", ", TLS" if self.tls else "",
                 (", session resumed" if self.session_present else ", new session") if self._v5 else "")
        if self._on_connected is not None:
            threading.Thread(target=self._safe_on_connected, name="bridge-resync", daemon=True).start()

    def _safe_on_connected(self) -> None:
        try:
            assert self._on_connected is not None
            self._on_connected()
        except Exception:
            log.exception("re-publishing desired state after connect failed")

    def _on_disconnect(self, _c: Any, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        self.connected.clear()
        with self._lock:
            self._probe_sent.clear()
        if not self._stopping:
            log.warning("controller bridge disconnected (%s); reconnecting", reason)

    # ----- ingest -----

    def _count(self, channel: str, outcome: str) -> None:
        with self._lock:
            self.counters[(channel, outcome)] += 1

    def _on_message(self, client: mqtt.Client, _ud: Any, message: mqtt.MQTTMessage) -> None:
        """paho's callback, on its network thread: queue the message; nothing may escape it."""
        try:
            if message.topic == self.probe_topic:
                self._probe_returned(bytes(message.payload))
                if message.qos:
                    client.ack(message.mid, message.qos)
                return
            self.last_message_at = time.monotonic()
            item = _Inbound(message.topic, bytes(message.payload), message.mid, message.qos, bool(message.retain),
                            self._connection)
            if message.qos == 0:
                if self._inbox.qsize() < self.queue_size:
                    self._inbox.put_nowait(item)
                else:  # QoS 0 is at most once by contract: counted, never blocks the wire
                    channel = message.topic.rsplit("/", 1)[-1]
                    self._count(channel, "overflow")
                    # the controller's own overload, not any device's doing: one line for the fleet,
                    # then one summary a minute (per device, a wave's backlog wrote 15,000 lines)
                    self.warnings.warn("*", "overflow",
                                       "ingest queue full (database slow or down): dropped a QoS 0 %s message "
                                       "from device %s (QoS 0 drops from any device are summarised once a "
                                       "minute; counted under outcome overflow)", channel, _device_of(message.topic))
                return
            # QoS 1: never dropped. MQTT 3.1.1 has no Receive Maximum: there the wire waits for room
            # (twice the QoS 0 bound), as the embedded broker's small fleets allow; under MQTT 5 only
            # past a hard cap (memory), which flow control should never let it reach.
            cap = QOS1_CAP_FACTOR * self.queue_size if self._v5 else 2 * self.queue_size
            while self._inbox.qsize() >= cap and not self._ingest_stop.is_set():
                time.sleep(0.01)
            with self._lock:
                self._queued_qos1 += 1
            self._inbox.put_nowait(item)
        except Exception:
            self._count("unknown", "error")
            log.exception("message on %s could not be queued (device %s)", message.topic, _device_of(message.topic))

    # ----- the ingest thread -----

    def _ingest_loop(self) -> None:
        while True:
            items = self._take()
            if not items:
                if self._ingest_stop.is_set():
                    return
                continue
            batched = [i for i in items if self._batchable(i)] if self._batching else []
            in_batch = {id(i) for i in batched}
            try:
                if batched:
                    self._process_batch(batched)
                for item in items:
                    if id(item) not in in_batch:
                        self._process_guarded(item)
            except BaseException:  # never ends the thread; a bug, not an outage: acknowledged, counted
                self.busy_since = None
                self._count("unknown", "error")
                log.exception("a batch of %d messages could not be handled", len(batched))
                for item in batched:
                    self._ack(item)
            finally:
                self._in_hand = 0
            if self._ingest_stop.is_set() and self.db_unavailable_since is not None:
                return  # stopping during an outage: the rest stays unacknowledged for the next session

    @property
    def _batching(self) -> bool:
        return self.batch_handler is not None and self.batch_max > 1

    def _batchable(self, item: _Inbound) -> bool:
        """The batch handler stands in for the handlers given at construction: a channel whose
        handler was replaced since (or a replaced ``handle``) takes the per-message path."""
        name = item.topic.rsplit("/", 1)[-1]
        if name not in BATCHED or "handle" in self.__dict__:
            return False
        channel = Channel(name)
        return self.handlers.get(channel) is self._batch_stands_in.get(channel)

    def _take(self) -> list[_Inbound]:
        """The next messages to apply: what is queued, up to ``batch_max``, waiting at most
        ``batch_wait_s`` after the first for more (never longer once the broker's Receive
        Maximum of unacknowledged QoS 1 messages is in hand: no more can come)."""
        try:
            items = [self._inbox.get(timeout=0.2)]
        except queue.Empty:
            return []
        if self._batching:
            deadline = time.monotonic() + self.batch_wait_s
            inflight = 1 if items[0].qos else 0
            while len(items) < self.batch_max:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._ingest_stop.is_set() or (self._v5 and inflight >= self.receive_maximum):
                        break
                    try:
                        item = self._inbox.get(timeout=remaining)
                    except queue.Empty:
                        break
                items.append(item)
                inflight += 1 if item.qos else 0
        self._in_hand = len(items)
        qos1 = sum(1 for i in items if i.qos)
        if qos1:
            with self._lock:
                self._queued_qos1 -= qos1
        return items

    def _process_guarded(self, item: _Inbound) -> None:
        try:
            self._process(item)
        except BaseException:  # never ends the thread; a bug, not an outage: acknowledged, counted
            self.busy_since = None
            self._count("unknown", "error")
            log.exception("message on %s could not be handled (device %s)", item.topic, _device_of(item.topic))
            self._ack(item)

    def _process_batch(self, items: list[_Inbound]) -> None:
        """Decode every message, apply the good ones in one transaction (``batch_handler``)
        until it commits, count each under its outcome, then acknowledge them all."""
        self.busy_since = time.monotonic()
        try:
            done: list[tuple[_Inbound, str]] = []
            ready: list[tuple[_Inbound, str, str, Any]] = []
            for item in items:
                decoded = self._decode(item.topic, item.payload)
                if isinstance(decoded, str):
                    done.append((item, decoded))
                else:
                    ready.append((item, *decoded))
            if ready:
                results = self._apply_batch(ready)
                if results is None:
                    return  # stopping during an outage: not applied, not acknowledged
                if isinstance(results, str):  # the batch itself failed (a bug): each message on its own path
                    for item, *_rest in ready:
                        self._process_guarded(item)
                    ready, results = [], []
                for (item, channel, device_id, _msg), result in zip(ready, results):
                    done.append((item, self._counted(channel, device_id, result)))
                self.batches += 1
                self.batched_messages += len(ready)
            for item, outcome in done:
                if item.retain and outcome in POISON:
                    self._poisoned_retained(self.client, item.topic, outcome)
                self._ack(item)
        finally:
            self.busy_since = None

    def _apply_batch(self, ready: list[tuple[_Inbound, str, str, Any]]) -> list[BaseException | None] | str | None:
        """``batch_handler`` until the batch commits; None when stopped during an outage,
        ``"alone"`` when it failed for a reason that is not the database's (each message
        then takes the per-message path, ``_process``)."""
        assert self.batch_handler is not None
        delay = self.retry_initial_s
        conflicts = 0
        msgs = [msg for _i, _c, _d, msg in ready]
        while True:
            try:
                results = self.batch_handler(msgs)
                self._db_up()
                return results
            except Exception as exc:
                if not (isinstance(exc, DatabaseUnavailable) or is_unavailable(exc)):
                    log.exception("a batch of %d messages failed; applying them one at a time", len(msgs))
                    return "alone"
                channel = ready[0][1]  # one count per attempt (the batch is retried as one)
                self._count(channel, "db_unavailable")
                if is_conflict(exc) and conflicts < 5:
                    conflicts += 1
                    self._count(channel, "db_conflict")
                    time.sleep(0.05 * conflicts)
                    continue
                self._db_down(ready[0][0], exc, delay)
                if self._ingest_stop.wait(delay):
                    return None
                delay = min(delay * 2, self.retry_max_s)

    def _counted(self, channel: str, device_id: str, result: BaseException | None) -> str:
        """Count (and log) one applied message's result as ``_handle`` does."""
        if result is None:
            self._count(channel, "ok")
            return "ok"
        outcome = getattr(result, "outcome", None)  # a deliberate refusal (ingest.Refused)
        if isinstance(outcome, str):
            self._count(channel, outcome)
            self.warnings.warn(_log_key(device_id, outcome), outcome, "dropped %s from device %s: %s", channel,
                               device_id, result)
            return outcome
        self._count(channel, "error")
        log.error("failed to apply %s from device %s", channel, device_id, exc_info=result)
        return "error"

    def _process(self, item: _Inbound) -> None:
        """Apply one message until it is stored (or found bad), then acknowledge it."""
        self.busy_since = time.monotonic()
        delay = self.retry_initial_s
        try:
            conflicts = 0
            while True:
                outcome = self.handle(item.topic, item.payload)
                if outcome != "db_unavailable":
                    break
                if self._last_db_error is not None and is_conflict(self._last_db_error) and conflicts < 5:
                    conflicts += 1  # lost a race with another writer (deadlock): again at once, no outage
                    self._count(item.topic.rsplit("/", 1)[-1], "db_conflict")
                    time.sleep(0.05 * conflicts)
                    continue
                self._db_down(item, self._last_db_error, delay)
                if self._ingest_stop.wait(delay):
                    return  # not applied, not acknowledged
                delay = min(delay * 2, self.retry_max_s)
            self._db_up()
            if item.retain and outcome in POISON:
                self._poisoned_retained(self.client, item.topic, outcome)
            self._ack(item)
        finally:
            self.busy_since = None

    def _db_down(self, item: _Inbound, exc: BaseException | None, delay: float) -> None:
        if self.db_unavailable_since is None:
            self.db_unavailable_since = time.monotonic()
            self.db_outages += 1
            log.error("database unavailable (%s): ingest paused, message on %s kept unacknowledged; "
                      "retrying with backoff up to %gs", exc, item.topic, self.retry_max_s)
        else:
            self.warnings.warn("*", "db_unavailable", "database still unavailable after %.0fs (%s); next retry in %gs",
                               time.monotonic() - self.db_unavailable_since, exc, delay)

    def _db_up(self) -> None:
        since = self.db_unavailable_since
        if since is not None:
            self.db_unavailable_since = None
            log.warning("database reachable again after %.1fs: ingest resumed", time.monotonic() - since)

    def _ack(self, item: _Inbound) -> None:
        """Acknowledge after the commit, on the connection the message came on (else the
        broker redelivers it to the resumed session)."""
        if item.qos == 0:
            return
        if item.connection != self._connection or not self.connected.is_set():
            self._count(item.topic.rsplit("/", 1)[-1], "unacked_reconnected")
            return
        try:
            self.client.ack(item.mid, item.qos)
        except Exception:  # the connection went away meanwhile: redelivered
            log.debug("ack of message %d failed", item.mid, exc_info=True)

    @property
    def backlog(self) -> int:
        return self._inbox.qsize() + (max(self._in_hand, 1) if self.busy_since is not None else self._in_hand)

    def _poisoned_retained(self, client: mqtt.Client, topic: str, outcome: str) -> None:
        """A retained payload that failed validation: counted; on ``status``, cleared."""
        channel = topic.rsplit("/", 1)[-1]
        self._count(channel, "retained_poison")
        if channel != Channel.STATUS.value:
            log.warning("device %s has a retained %s message on %s; skipped", _device_of(topic), outcome, topic)
            return
        client.publish(topic, b"", qos=1, retain=True)
        self._count(channel, "cleared")
        log.warning("cleared the retained %s status message of device %s", outcome, _device_of(topic))

    def handle(self, topic: str, payload: bytes) -> str:
        """Validate and apply one message; returns the outcome it was counted under. Never raises
        (a database outage is ``db_unavailable``, counted; the MQTT path retries instead)."""
        try:
            return self._handle(topic, payload)
        except DatabaseUnavailable as exc:
            self._last_db_error = exc
            self._count(topic.rsplit("/", 1)[-1], "db_unavailable")
            return "db_unavailable"
        except Exception:
            self._count("unknown", "error")
            log.exception("message on %s could not be handled (device %s)", topic, _device_of(topic))
            return "error"

    def _decode(self, topic: str, payload: bytes) -> str | tuple[str, str, Any]:
        """Check one message — topic, handler, size, schema, device id — and decode it:
        (channel, device id, message), or the outcome it was counted under."""
        try:
            parsed = parse_topic(topic)
        except InvalidTopic as exc:
            self._count("unknown", "bad_topic")
            self.warnings.warn(_device_of(topic), "bad_topic", "ignored message on %s: %s", topic, exc)
            return "bad_topic"
        channel = parsed.channel
        handler = self.handlers.get(channel)
        if handler is None:
            self._count(channel.value, "unhandled")
            return "unhandled"
        if not payload:
            self._count(channel.value, "empty")  # a retained message being cleared
            return "empty"
        try:
            msg = decode(payload, max_bytes=RULES[channel].max_bytes)
        except InvalidPayload as exc:
            self._count(channel.value, "invalid")
            self.warnings.warn(parsed.device_id, "invalid", "device %s sent an invalid %s message: %s",
                               parsed.device_id, channel.value, exc)
            return "invalid"
        expected_schema = f"fleet.{'event' if channel is Channel.EVENTS else channel.value}/1"
        if getattr(msg, "schema_", None) != expected_schema:
            self._count(channel.value, "invalid")
            self.warnings.warn(parsed.device_id, "invalid", "device %s sent %s on its %s topic", parsed.device_id,
                               getattr(msg, "schema_", "?"), channel.value)
            return "invalid"
        if msg.device_id != parsed.device_id:
            self._count(channel.value, "spoofed")
            self.warnings.warn(parsed.device_id, "spoofed", "ignored %s on device %s's topic claiming to be from device %s",
                               channel.value, parsed.device_id, msg.device_id)
            return "spoofed"
        return channel.value, parsed.device_id, msg

    def _handle(self, topic: str, payload: bytes) -> str:
        decoded = self._decode(topic, payload)
        if isinstance(decoded, str):
            return decoded
        channel, device_id, msg = decoded
        try:
            self.handlers[Channel(channel)](msg)
        except Exception as exc:
            if is_unavailable(exc):  # not the message's fault: retried, never acknowledged-and-dropped
                raise DatabaseUnavailable(str(exc).splitlines()[0][:300]) from exc
            outcome = getattr(exc, "outcome", None)  # a handler's deliberate refusal (ingest.Refused)
            if isinstance(outcome, str):
                self._count(channel, outcome)
                self.warnings.warn(_log_key(device_id, outcome), outcome, "dropped %s from device %s: %s", channel,
                                   device_id, exc)
                return outcome
            self._count(channel, "error")
            log.exception("failed to apply %s from device %s", channel, device_id)
            return "error"
        self._count(channel, "ok")
        return "ok"

    # ----- watchdog -----

    def _watch(self) -> None:
        while not self._watch_stop.wait(self.probe_interval_s):
            try:
                self.probe()
            except Exception:
                log.exception("bridge watchdog probe failed")

    def probe(self) -> bool:
        """Publish one probe to ``probe_topic``; False when there is no connection to send it on."""
        if not self.connected.is_set():
            return False
        with self._lock:
            self._probe_seq += 1
            seq = self._probe_seq
            self._probe_sent[seq] = time.monotonic()
            if len(self._probe_sent) > 16:  # stalled: keep the oldest (it dates the stall) and the newest
                for old in sorted(self._probe_sent)[1:-15]:
                    del self._probe_sent[old]
        self.client.publish(self.probe_topic, str(seq).encode(), qos=0)
        return True

    def _probe_returned(self, payload: bytes) -> None:
        try:
            seq = int(payload)
        except ValueError:
            return
        now = time.monotonic()
        with self._lock:
            sent = self._probe_sent.get(seq)
            if sent is None:
                return
            self.last_probe_rtt_s = now - sent
            for s in [s for s in self._probe_sent if s <= seq]:  # older ones lost: this one came through
                del self._probe_sent[s]

    def ingest_alive(self, now: float | None = None) -> bool:
        """The watchdog's verdict: paho's network thread runs and delivers probes in time.

        While disconnected it is the thread alone (it is busy reconnecting); ``connected``
        tells that apart.
        """
        if not self._started or self._stopping:
            return False
        thread = getattr(self.client, "_thread", None)  # paho's network thread (loop_start)
        if thread is None or not thread.is_alive():
            return False
        now = time.monotonic() if now is None else now
        ingest = self._ingest_thread
        if ingest is None or not ingest.is_alive():
            return False
        busy = self.busy_since
        if busy is not None and self.db_unavailable_since is None and now - busy > self.probe_timeout_s:
            return False  # one message has been applying for too long: stuck
        with self._lock:
            oldest = min(self._probe_sent.values(), default=None)
        return oldest is None or now - oldest < self.probe_timeout_s

    def consuming(self, now: float | None = None) -> bool:
        """Ingest moves: connected, both threads alive and in time, and no database outage."""
        return self.connected.is_set() and self.db_unavailable_since is None and self.ingest_alive(now)

    def health(self, now: float | None = None) -> dict[str, Any]:
        """``mqtt_connected``, ``ingest_alive``, ``last_message_age_s``, ``probe_rtt_s``, and
        ``consuming``, ``backlog`` (of it ``backlog_qos1``), ``database_retrying_s`` (None unless in a
        database outage)."""
        now = time.monotonic() if now is None else now
        last = self.last_message_at
        down = self.db_unavailable_since
        return {
            "mqtt_connected": self.connected.is_set(),
            "ingest_alive": self.ingest_alive(now),
            "last_message_age_s": None if last is None else round(now - last, 3),
            "probe_rtt_s": None if self.last_probe_rtt_s is None else round(self.last_probe_rtt_s, 4),
            "consuming": self.consuming(now),
            "backlog": self.backlog,
            "backlog_qos1": self._queued_qos1,
            "database_retrying_s": None if down is None else round(now - down, 3),
        }

    # ----- publish -----

    def publish_desired(self, desired: Desired) -> None:
        rule = RULES[Channel.DESIRED]
        info = self.client.publish(desired_topic(desired.device_id), encode(desired), qos=rule.qos, retain=rule.retain)
        self._count("desired", "published" if info.rc == mqtt.MQTT_ERR_SUCCESS else "queued")
        log.debug("desired generation %d published for device %s", desired.generation, desired.device_id)


def _device_of(topic: str) -> str:
    """The device id in a device topic, for log lines ("?" when there is none)."""
    parts = topic.split("/")
    return parts[3] if len(parts) == 5 and parts[2] == "devices" else "?"
