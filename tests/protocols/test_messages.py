from __future__ import annotations

import json

import pytest

from edgefleet.protocols import (
    Channel,
    Desired,
    InvalidPayload,
    InvalidTopic,
    PayloadTooLarge,
    Reported,
    Status,
    Telemetry,
    decode,
    encode,
    parse_topic,
    reported_topic,
    subscription,
)
from edgefleet.protocols.messages import utcnow


def test_every_message_round_trips_with_its_schema_field() -> None:
    now = utcnow()
    for msg in (
        Desired(device_id="cam-1", generation=3),
        Reported(device_id="cam-1", generation=3),
        Telemetry(device_id="cam-1", period_start=now, period_end=now, frames=10),
        Status(device_id="cam-1", online=True),
    ):
        data = encode(msg)
        assert json.loads(data)["schema"].startswith("fleet.")
        assert decode(data) == msg


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b'{"schema": "fleet.reported/1", "device_id": "x", "generation": -1}', "generation"),
        (b'{"schema": "fleet.status/1", "device_id": "x"}', "online"),
        (b'{"schema": "fleet.nope/9"}', "schema"),
        (b'{"device_id": "x"}', "schema"),
        (b'{"schema": "fleet.reported/1", "device_id": "x", "generation": 1, "slots": {"control": {"phase": "exploded"}}}', "slots.control.phase"),
    ],
)
def test_invalid_payload_names_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(InvalidPayload) as exc:
        decode(payload)
    assert exc.value.field == field
    assert field in str(exc.value)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1,2]", b"\xff\xfe", b"null"])
def test_garbage_is_one_typed_error(payload: bytes) -> None:
    with pytest.raises(InvalidPayload):
        decode(payload)


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        decode(b"{" + b" " * 2000 + b"}", max_bytes=1000)


def test_expected_schema_is_enforced() -> None:
    with pytest.raises(InvalidPayload, match="expected"):
        decode(encode(Status(device_id="a", online=True)), Desired)


def test_topics_build_and_parse() -> None:
    t = reported_topic("cam-7")
    assert t == "fleet/v1/devices/cam-7/reported"
    parsed = parse_topic(t)
    assert (parsed.device_id, parsed.channel) == ("cam-7", Channel.REPORTED)
    assert subscription(Channel.STATUS, shared=True) == "$share/controllers/fleet/v1/devices/+/status"


@pytest.mark.parametrize("topic", ["fleet/v1/devices/cam/bogus", "fleet/v2/devices/cam/status", "fleet/v1/devices/a/b/status", "x", "fleet/v1/devices/+/status"])
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(topic)
