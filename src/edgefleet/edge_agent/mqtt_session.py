"""The agent's MQTT session: persistent, with a retained ``online`` status and an ``offline`` will.

The client id is the device id and the session is persistent (``clean_session=False`` on
3.1.1, ``clean_start=False`` plus a session expiry on MQTT 5), so QoS 1 ``desired``
messages sent while the device was away are delivered when it returns; the retained
``desired`` covers a broker that lost its sessions. Paho reconnects on its own with
backoff; every (re)connect re-announces ``online`` and re-subscribes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

from ..protocols import (
    RULES,
    Channel,
    Desired,
    InvalidPayload,
    Status,
    decode,
    desired_topic,
    device_topic,
    encode,
    status_topic,
)
from .config import MqttSection

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600


class AgentMqtt:
    def __init__(
        self,
        device_id: str,
        cfg: MqttSection,
        *,
        on_desired: Callable[[Desired], None],
        on_connect: Callable[[], None] | None = None,
        agent_version: str = "",
        hardware_id: str = "",
    ):
        self.device_id = device_id
        self.cfg = cfg
        self.on_desired = on_desired
        self.on_connect_cb = on_connect
        self.agent_version = agent_version
        self.hardware_id = hardware_id
        self.connected = threading.Event()
        self.invalid_desired = 0
        self._v5 = cfg.protocol == "5"
        if self._v5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311, clean_session=False
            )
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self.client.tls_set()
        self.client.max_queued_messages_set(1000)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        will = Status(device_id=device_id, online=False, agent_version=agent_version, hardware_id=hardware_id)
        self.client.will_set(status_topic(device_id), encode(will), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive, **kwargs)
        self.client.loop_start()

    def stop(self) -> None:
        if self.connected.is_set():
            info = self.publish_status(False)
            try:
                info.wait_for_publish(2)
            except Exception:
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.error("device %s: broker refused the connection: %s", self.device_id, reason)
            return
        client.subscribe(desired_topic(self.device_id), qos=1)
        self.connected.set()
        self.publish_status(True)
        log.info("device %s connected to %s:%d", self.device_id, self.cfg.host, self.cfg.port)
        if self.on_connect_cb:
            self.on_connect_cb()

    def _on_disconnect(self, _c: Any, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if self.connected.is_set():
            log.warning("device %s lost the broker (%s); reconnecting", self.device_id, reason)
        self.connected.clear()

    def _on_message(self, _c: Any, _ud: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != desired_topic(self.device_id):
            return
        if not message.payload:
            return  # retained message cleared
        try:
            desired = decode(bytes(message.payload), Desired, max_bytes=RULES[Channel.DESIRED].max_bytes)
        except InvalidPayload as exc:
            self.invalid_desired += 1
            log.warning("device %s ignored an invalid desired message: %s", self.device_id, exc)
            return
        if desired.device_id != self.device_id:
            self.invalid_desired += 1
            log.warning("device %s ignored desired state addressed to %s", self.device_id, desired.device_id)
            return
        self.on_desired(desired)

    def publish(self, channel: Channel, message: BaseModel) -> mqtt.MQTTMessageInfo:
        rule = RULES[channel]
        return self.client.publish(device_topic(self.device_id, channel), encode(message), qos=rule.qos, retain=rule.retain)

    def publish_status(self, online: bool) -> mqtt.MQTTMessageInfo:
        return self.publish(
            Channel.STATUS,
            Status(device_id=self.device_id, online=online, agent_version=self.agent_version, hardware_id=self.hardware_id),
        )
