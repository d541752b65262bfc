"""``decode`` bounds what it parses: depth, size, encoding and the maps a device fills.

A ~1.5 KB ``[[[[…`` used to escape ``decode`` as RecursionError and end the MQTT thread
that called it; every case here must come back as ``InvalidPayload`` (or a model).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from edgefleet.protocols import (
    Desired,
    Event,
    InvalidPayload,
    PayloadTooLarge,
    Reported,
    ShadowStats,
    Status,
    Telemetry,
    decode,
    encode,
)
from edgefleet.protocols.messages import (
    MAX_DEPTH,
    MAX_HARDWARE_KEYS,
    MAX_KEY_LENGTH,
    MAX_OPEN_KEYS,
    SCHEMAS,
    nesting_depth,
)

NOW = datetime(2024, 5, 1, tzinfo=timezone.utc)
SAMPLES: dict[str, Any] = {
    "fleet.desired/1": Desired(device_id="cam-1", generation=3),
    "fleet.reported/1": Reported(device_id="cam-1", generation=3),
    "fleet.telemetry/1": Telemetry(device_id="cam-1", period_start=NOW, period_end=NOW, frames=10,
                                   class_counts={"3": 4}, hardware={"gpu": {"temp_c": 41.0}},
                                   shadow=ShadowStats(per_class_disagreements={"3": 1}, confusion={"3": {"8": 1}})),
    "fleet.event/1": Event(device_id="cam-1", event_id="e1", trigger="disagreement"),
    "fleet.status/1": Status(device_id="cam-1", online=True),
}
POISON = b"[" * 1500 + b"]" * 1500  # the payload from the report: deep, and only ~3 KB


def _sample_obj(schema: str) -> dict[str, Any]:
    return json.loads(encode(SAMPLES[schema]))


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def _telemetry(**fields: Any) -> bytes:
    obj = _sample_obj("fleet.telemetry/1")
    obj.update(fields)
    return json.dumps(obj).encode()


def test_every_schema_has_a_sample() -> None:
    assert set(SAMPLES) == set(SCHEMAS)


@pytest.mark.parametrize("schema", sorted(SAMPLES))
def test_valid_sample_of_every_schema_decodes(schema: str) -> None:
    msg = decode(encode(SAMPLES[schema]))
    assert type(msg) is SCHEMAS[schema]


def test_deeply_nested_array_is_refused_with_a_clear_message() -> None:
    with pytest.raises(InvalidPayload, match=f"nested deeper than {MAX_DEPTH} levels"):
        decode(POISON)


def test_unbalanced_deep_nesting_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidPayload, match="nested deeper"):
        decode(b"[" * 100_000, max_bytes=1 << 20)


@pytest.mark.parametrize("schema", sorted(SAMPLES))
def test_deep_nesting_inside_a_valid_message_is_refused_for_every_schema(schema: str) -> None:
    obj = _sample_obj(schema)
    obj["extra"] = _nested(MAX_DEPTH)  # under the top-level object: one level too many
    with pytest.raises(InvalidPayload, match="nested deeper"):
        decode(json.dumps(obj).encode())


@pytest.mark.parametrize("opener", ["[", '{"k":'])
def test_nesting_up_to_the_limit_parses(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = opener * (MAX_DEPTH - 2) + "1" + closer * (MAX_DEPTH - 2)
    payload = _telemetry(hardware={"deep": json.loads(inner)})
    assert nesting_depth(payload) == MAX_DEPTH
    msg = decode(payload)
    assert isinstance(msg, Telemetry) and "deep" in msg.hardware


def test_brackets_and_escaped_quotes_inside_strings_do_not_count() -> None:
    text = '\\"' + "[" * 500 + "{" * 500
    payload = _telemetry(hardware={"note": text, 'k"[[': "]]"})
    assert nesting_depth(payload) == nesting_depth(_telemetry(hardware={"note": "", "k": ""})) == 4  # shadow.confusion.3
    assert decode(payload).hardware["note"] == text


@pytest.mark.parametrize(("payload", "depth"), [
    (b"1", 0), (b"[]", 1), (b'{"a": [1, {"b": []}]}', 4), (b'["]]]]", "[[[["]', 1),
    (b'{"a\\\\": "\\"[", "b": [[]]}', 3), ('{"ü[": ["€"]}'.encode(), 2),
])
def test_nesting_depth_counts_only_structure(payload: bytes, depth: int) -> None:
    assert nesting_depth(payload) == depth


@pytest.mark.parametrize("field", ["class_counts", "hardware"])
def test_wide_device_maps_are_refused_naming_the_field(field: str) -> None:
    limit = MAX_HARDWARE_KEYS if field == "hardware" else MAX_OPEN_KEYS
    ok = {str(i): i for i in range(limit)}
    assert len(getattr(decode(_telemetry(**{field: ok})), field)) == limit
    with pytest.raises(InvalidPayload) as exc:
        decode(_telemetry(**{field: {**ok, "one-more": 1}}))
    assert exc.value.field == field


def test_wide_shadow_maps_are_refused() -> None:
    wide = {str(i): 1 for i in range(MAX_OPEN_KEYS + 1)}
    for shadow in ({"per_class_disagreements": wide}, {"confusion": {"3": wide}},
                   {"confusion": {str(i): {} for i in range(MAX_OPEN_KEYS + 1)}}):
        with pytest.raises(InvalidPayload) as exc:
            decode(_telemetry(shadow=shadow))
        assert exc.value.field is not None and exc.value.field.startswith("shadow.")


@pytest.mark.parametrize("field", ["class_counts", "hardware"])
def test_long_keys_in_device_maps_are_refused(field: str) -> None:
    assert decode(_telemetry(**{field: {"k" * MAX_KEY_LENGTH: 1}}))
    with pytest.raises(InvalidPayload) as exc:
        decode(_telemetry(**{field: {"k" * (MAX_KEY_LENGTH + 1): 1}}))
    assert exc.value.field is not None and exc.value.field.startswith(field)


def test_negative_or_absurd_counts_are_refused() -> None:
    for counts in ({"3": -1}, {"3": 2**64}):
        with pytest.raises(InvalidPayload, match="class_counts"):
            decode(_telemetry(class_counts=counts))


def test_huge_payload_is_refused_before_parsing() -> None:
    payload = _telemetry(hardware={"blob": "x" * 300_000})
    with pytest.raises(PayloadTooLarge, match="exceeds the limit"):
        decode(payload)
    with pytest.raises(PayloadTooLarge):
        decode(b"[" * 20_000, max_bytes=16 * 1024)  # the size check comes first, cheapest


def test_size_limit_counts_utf8_bytes_of_text_input() -> None:
    text = json.dumps({"schema": "fleet.status/1", "device_id": "cam-1", "online": True, "agent_version": "€" * 600},
                      ensure_ascii=False)
    assert len(text) < 1000 < len(text.encode())
    with pytest.raises(PayloadTooLarge):
        decode(text, max_bytes=1000)


def test_huge_string_in_a_bounded_field_is_refused_naming_it() -> None:
    obj = _sample_obj("fleet.reported/1")
    obj["slots"] = {"control": {"phase": "failed", "error": "e" * 50_000}}
    with pytest.raises(InvalidPayload) as exc:
        decode(json.dumps(obj).encode())
    assert exc.value.field == "slots.control.error"


def test_huge_integer_literal_is_invalid_json_not_a_crash() -> None:
    payload = b'{"schema": "fleet.status/1", "device_id": "cam-1", "online": true, "x": ' + b"9" * 5000 + b"}"
    with pytest.raises(InvalidPayload, match="not valid JSON"):
        decode(payload)


@pytest.mark.parametrize("payload", [
    b"\xff\xfe\x00", b'{"schema": "fleet.status/1", "device_id": "cam-\xc3"}',
    json.dumps({"schema": "fleet.status/1", "device_id": "cam-1", "online": True}).encode("utf-16"),
    b"\xef\xbb\xbf{}",
])
def test_non_utf8_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(InvalidPayload):
        decode(payload)


def test_text_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="UTF-8"):
        decode('{"schema": "fleet.status/1", "device_id": "\ud800"}')


@pytest.mark.parametrize("payload", [None, 42, ["x"], object()])
def test_a_payload_of_the_wrong_type_is_refused(payload: Any) -> None:
    with pytest.raises(InvalidPayload, match="bytes or text"):
        decode(payload)


@pytest.mark.parametrize("payload", [b"", b"null", b"[]", b'"s"', b"NaN", b"{", b'{"schema": 1}', b'{"schema": "x"}'])
def test_other_bad_payloads_are_invalid_payload(payload: bytes) -> None:
    with pytest.raises(InvalidPayload):
        decode(payload)


def test_bytearray_and_memoryview_payloads_decode() -> None:
    raw = encode(SAMPLES["fleet.status/1"])
    assert decode(bytearray(raw)).online is True
    assert decode(memoryview(raw)).online is True


def test_deep_poison_is_refused_in_linear_time() -> None:
    """The scan before json.loads is linear: 16 times the input costs about 16 times the time."""
    import time

    def cost(n: int) -> float:
        payload = b'{"a": "' + b"[" * n + b'"}' + b"[" * n
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            with pytest.raises(InvalidPayload):
                decode(payload, max_bytes=1 << 24)
            best = min(best, time.perf_counter() - t0)
        return best

    small, large = cost(32_768), cost(16 * 32_768)
    assert large / small < 64  # quadratic would be ~256
