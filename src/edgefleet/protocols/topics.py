"""MQTT topic names, QoS/retain rules and parsing for the ``fleet/v1/`` namespace.

Devices publish only under their own id; the controller subscribes with wildcards
(``fleet/v1/devices/+/reported``), through MQTT 5 shared subscriptions where the
broker offers them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import InvalidTopic

NAMESPACE = "fleet/v1"
SHARED_GROUP = "controllers"
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class Channel(str, Enum):
    DESIRED = "desired"
    REPORTED = "reported"
    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATUS = "status"


@dataclass(frozen=True)
class TopicRule:
    qos: int
    retain: bool
    from_device: bool
    max_bytes: int


RULES: dict[Channel, TopicRule] = {
    Channel.DESIRED: TopicRule(qos=1, retain=True, from_device=False, max_bytes=64 * 1024),
    Channel.REPORTED: TopicRule(qos=1, retain=False, from_device=True, max_bytes=64 * 1024),
    Channel.TELEMETRY: TopicRule(qos=0, retain=False, from_device=True, max_bytes=256 * 1024),
    Channel.EVENTS: TopicRule(qos=1, retain=False, from_device=True, max_bytes=16 * 1024),
    Channel.STATUS: TopicRule(qos=1, retain=True, from_device=True, max_bytes=4 * 1024),
}


def is_valid_device_id(device_id: str) -> bool:
    return bool(_DEVICE_ID.match(device_id))


def check_device_id(device_id: str) -> str:
    if not is_valid_device_id(device_id):
        raise InvalidTopic(
            f"invalid device id {device_id!r}: use 1-128 letters, digits, '.', '_' or '-'"
        )
    return device_id


def device_topic(device_id: str, channel: Channel) -> str:
    return f"{NAMESPACE}/devices/{check_device_id(device_id)}/{channel.value}"


def desired_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.DESIRED)


def reported_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.REPORTED)


def telemetry_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.TELEMETRY)


def events_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.EVENTS)


def status_topic(device_id: str) -> str:
    return device_topic(device_id, Channel.STATUS)


def subscription(channel: Channel, *, shared: bool = False) -> str:
    """Wildcard subscription over all devices for one channel."""
    topic = f"{NAMESPACE}/devices/+/{channel.value}"
    return f"$share/{SHARED_GROUP}/{topic}" if shared else topic


@dataclass(frozen=True)
class DeviceTopic:
    device_id: str
    channel: Channel


def parse_topic(topic: str) -> DeviceTopic:
    """Split ``fleet/v1/devices/{id}/{channel}`` into its parts.

    Raises:
        InvalidTopic: the topic is outside the namespace or malformed.
    """
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != NAMESPACE or parts[2] != "devices":
        raise InvalidTopic(f"not a fleet/v1 device topic: {topic!r}")
    device_id, channel = parts[3], parts[4]
    check_device_id(device_id)
    try:
        return DeviceTopic(device_id, Channel(channel))
    except ValueError:
        raise InvalidTopic(f"unknown channel {channel!r} in {topic!r}") from None
