"""The controller's MQTT bridge: ingest device messages, publish desired state.

Subscribes to ``status``, ``reported``, ``telemetry`` and ``events`` of every device
(``$share/controllers/...`` on MQTT 5 so replicas split the load). Each message is
checked in order — topic shape, size, schema, device id in the payload equals the id in
the topic — and only then applied. Anything that fails is counted under its outcome and
logged with the device id; nothing a device sends can stop the bridge. With MQTT 5 the
bridge acknowledges a message only after it was applied (``manual_ack``).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..protocols import (
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

log = logging.getLogger(__name__)

INGESTED = (Channel.STATUS, Channel.REPORTED, Channel.TELEMETRY, Channel.EVENTS)
Handler = Callable[[Any], None]


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
        tls: BridgeTls | None = None,
    ):
        self.host, self.port = host, port
        self.handlers = handlers
        self.counters: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._on_connected = on_connected
        self._v5 = protocol == "5"
        self.connected = threading.Event()
        self._stopping = False
        if self._v5:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True
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
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if wait and not self.connected.wait(wait):
            log.warning("MQTT broker %s:%d not reachable yet; will keep retrying", self.host, self.port)

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connect refused: %s", reason)
            return
        for channel in INGESTED:
            client.subscribe(subscription(channel, shared=self._v5), qos=1)
        self.connected.set()
        log.info("controller bridge connected to %s:%d (MQTT %s%s)", self.host, self.port, "5" if self._v5 else "3.1.1",
                 ", TLS" if self.tls else "")
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
        if not self._stopping:
            log.warning("controller bridge disconnected (%s); reconnecting", reason)

    # ----- ingest -----

    def _count(self, channel: str, outcome: str) -> None:
        with self._lock:
            self.counters[(channel, outcome)] += 1

    def _on_message(self, client: mqtt.Client, _ud: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self.handle(message.topic, bytes(message.payload))
        finally:
            if self._v5:
                try:
                    client.ack(message.mid, message.qos)
                except Exception:  # acking a QoS 0 message or after a reconnect
                    pass

    def handle(self, topic: str, payload: bytes) -> str:
        """Validate and apply one message; returns the outcome it was counted under."""
        try:
            parsed = parse_topic(topic)
        except InvalidTopic as exc:
            self._count("unknown", "bad_topic")
            log.warning("ignored message on %s: %s", topic, exc)
            return "bad_topic"
        channel = parsed.channel
        handler = self.handlers.get(channel)
        if handler is None:
            self._count(channel.value, "unhandled")
            return "unhandled"
        try:
            msg = decode(payload, max_bytes=RULES[channel].max_bytes)
        except InvalidPayload as exc:
            self._count(channel.value, "invalid")
            log.warning("device %s sent an invalid %s message: %s", parsed.device_id, channel.value, exc)
            return "invalid"
        expected_schema = f"fleet.{'event' if channel is Channel.EVENTS else channel.value}/1"
        if getattr(msg, "schema_", None) != expected_schema:
            self._count(channel.value, "invalid")
            log.warning("device %s sent %s on its %s topic", parsed.device_id, getattr(msg, "schema_", "?"), channel.value)
            return "invalid"
        if msg.device_id != parsed.device_id:
            self._count(channel.value, "spoofed")
            log.warning(
                "ignored %s on device %s's topic claiming to be from device %s",
                channel.value, parsed.device_id, msg.device_id,
            )
            return "spoofed"
        try:
            handler(msg)
        except Exception:
            self._count(channel.value, "error")
            log.exception("failed to apply %s from device %s", channel.value, parsed.device_id)
            return "error"
        self._count(channel.value, "ok")
        return "ok"

    # ----- publish -----

    def publish_desired(self, desired: Desired) -> None:
        rule = RULES[Channel.DESIRED]
        info = self.client.publish(desired_topic(desired.device_id), encode(desired), qos=rule.qos, retain=rule.retain)
        self._count("desired", "published" if info.rc == mqtt.MQTT_ERR_SUCCESS else "queued")
        log.debug("desired generation %d published for device %s", desired.generation, desired.device_id)
