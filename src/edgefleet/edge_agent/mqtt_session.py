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
from .errors import ConfigError

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600
SIGNED_CHANNELS = frozenset({Channel.REPORTED, Channel.TELEMETRY})


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
        # signs `reported` and `telemetry` (edge_agent/report_signer.py); set by the daemon
        self.signer: Callable[[BaseModel], bytes] | None = None
        self._sign_lock = threading.Lock()  # sequence numbers leave in the order they were taken
        self.connected = threading.Event()
        self.invalid_desired = 0
        self.handler_errors = 0  # exceptions in the handler path (decode, on_desired), caught
        self._v5 = cfg.protocol == "5"
        if self._v5:
            self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311, clean_session=False
            )
        if cfg.username:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:  # the broker's chain and host name are verified (paho's default); fleet CA when ca_file
            try:
                self.client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                                    certfile=str(cfg.cert_file) if cfg.cert_file else None,
                                    keyfile=str(cfg.key_file) if cfg.key_file else None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(f"[mqtt] TLS: cannot load ca_file/cert_file/key_file: {exc}") from None
            if cfg.tls_insecure:
                self.client.tls_insecure_set(True)
                log.warning("device %s: [mqtt] tls_insecure: the broker's host name is NOT checked", device_id)
        self.client.max_queued_messages_set(1000)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        will = Status(device_id=device_id, online=False, agent_version=agent_version, hardware_id=hardware_id)
        self.client.will_set(status_topic(device_id), encode(will), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def set_credentials(self, username: str, password: str | None) -> None:
        """Broker credentials for the next (re)connect (a credentials rotation)."""
        self.client.username_pw_set(username, password)

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
            log.error("device %s: broker %s:%d refused the connection: %s%s", self.device_id, self.cfg.host,
                      self.cfg.port, reason, self.refusal_hint(reason))
            return
        client.subscribe(desired_topic(self.device_id), qos=1)
        self.connected.set()
        try:
            self.publish_status(True)
        except Exception:  # paho's network thread: an exception here would end it
            log.exception("device %s: could not publish its online status", self.device_id)
        log.info("device %s connected to %s:%d", self.device_id, self.cfg.host, self.cfg.port)
        if self.on_connect_cb:
            # Not on paho's network thread: the callback builds and signs a report (the first
            # one probes the runtimes, and a sequence reservation is fsynced), and while it
            # runs that thread sends nothing, the status above and the keepalive included.
            threading.Thread(target=self._run_on_connect, name=f"{self.device_id}-connected", daemon=True).start()

    def _run_on_connect(self) -> None:
        try:
            assert self.on_connect_cb is not None
            self.on_connect_cb()
        except Exception:
            log.exception("device %s: the on-connect report failed", self.device_id)

    def refusal_hint(self, reason: Any) -> str:
        """What to check when the broker refuses us: the account and client id it saw, and where they come from."""
        text = str(reason).lower()
        user = self.client.username or "(none)"
        if "not authori" in text or "bad user" in text or "bad username" in text or "banned" in text:
            return (f" — username {user!r}, client id {self.device_id!r}. Check: the device is enrolled and not "
                    "revoked (`fleet device ls`); its credentials were installed with `fleet-agent provision` "
                    "(data_dir/identity/credentials.json) and match the latest `fleet device add`/`rotate-credentials`; "
                    "the broker reads the password file and ACL the controller writes (broker_auth_dir) and was "
                    "reloaded; the client id equals the device id")
        if "protocol" in text or "unsupported" in text:
            return f" — this agent speaks MQTT {self.cfg.protocol}: set [mqtt] protocol to what the broker supports"
        return f" — username {user!r}, client id {self.device_id!r}"

    def _on_disconnect(self, _c: Any, _ud: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if self.connected.is_set():
            log.warning("device %s lost the broker (%s); reconnecting", self.device_id, reason)
        self.connected.clear()

    def counters(self) -> dict[str, int]:
        """Messages refused or failed on this session, by outcome (for the agent's metrics)."""
        return {"invalid_desired": self.invalid_desired, "handler_errors": self.handler_errors}

    def _on_message(self, _c: Any, _ud: Any, message: mqtt.MQTTMessage) -> None:
        """paho's callback, on its network thread: nothing may escape it (that ends the thread,
        and with it every later deployment while telemetry still flows)."""
        try:
            self._handle_message(message.topic, bytes(message.payload), retained=bool(message.retain))
        except Exception:
            self.handler_errors += 1
            log.exception("device %s failed to handle a message on %s", self.device_id, message.topic)

    def _handle_message(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        if topic != desired_topic(self.device_id):
            return
        if not payload:
            return  # retained message cleared
        try:
            desired = decode(payload, Desired, max_bytes=RULES[Channel.DESIRED].max_bytes)
        except InvalidPayload as exc:
            self.invalid_desired += 1
            # a retained one stays until the controller publishes the next desired, which replaces it
            log.warning("device %s ignored an invalid%s desired message: %s", self.device_id,
                        " retained" if retained else "", exc)
            return
        if desired.device_id != self.device_id:
            self.invalid_desired += 1
            log.warning("device %s ignored desired state addressed to %s", self.device_id, desired.device_id[:128])
            return
        self.on_desired(desired)

    def publish(self, channel: Channel, message: BaseModel) -> mqtt.MQTTMessageInfo:
        rule = RULES[channel]
        topic = device_topic(self.device_id, channel)
        if self.signer is not None and channel in SIGNED_CHANNELS:
            with self._sign_lock:
                return self.client.publish(topic, self.signer(message), qos=rule.qos, retain=rule.retain)
        return self.client.publish(topic, encode(message), qos=rule.qos, retain=rule.retain)

    def publish_status(self, online: bool) -> mqtt.MQTTMessageInfo:
        return self.publish(
            Channel.STATUS,
            Status(device_id=self.device_id, online=online, agent_version=self.agent_version, hardware_id=self.hardware_id),
        )
