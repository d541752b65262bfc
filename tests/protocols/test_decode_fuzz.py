"""Hypothesis: whatever bytes arrive, ``decode`` returns a model or raises ``InvalidPayload``.

Three generators — arbitrary bytes, arbitrary JSON under every schema, and valid messages
of every schema mutated byte-wise and field-wise (deep nesting spliced in included) —
and one property each. Any other exception fails the test.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.protocols import InvalidPayload, decode, encode
from edgefleet.protocols.messages import MAX_DEPTH, SCHEMAS, nesting_depth

from .test_decode_bounds import SAMPLES

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=40,
)
schemas = st.sampled_from(sorted(SCHEMAS))
samples = st.sampled_from(sorted(SAMPLES)).map(lambda s: json.loads(_encoded(s)))  # a fresh copy each time


def _encoded(schema: str) -> bytes:
    return encode(SAMPLES[schema])


def _decodes_or_refuses(payload: Any) -> None:
    try:
        msg = decode(payload)
    except InvalidPayload:
        return
    assert type(msg) in SCHEMAS.values()


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_are_refused(payload: bytes) -> None:
    _decodes_or_refuses(payload)


@FUZZ
@given(st.text(max_size=2048))
def test_arbitrary_text_decodes_or_is_refused(payload: str) -> None:
    _decodes_or_refuses(payload)


@FUZZ
@given(schemas, st.dictionaries(st.text(max_size=20), json_values, max_size=12))
def test_arbitrary_json_under_every_schema_decodes_or_is_refused(schema: str, fields: dict[str, Any]) -> None:
    _decodes_or_refuses(json.dumps({**fields, "schema": schema}).encode())


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_byte_mutated_valid_messages_decode_or_are_refused(schema: str, data: st.DataObject) -> None:
    raw = bytearray(_encoded(schema))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "brackets"]))
        i = data.draw(st.integers(0, len(raw)))
        if op == "flip" and i < len(raw):
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del raw[i:i + data.draw(st.integers(1, 16))]
        elif op == "truncate":
            del raw[i:]
        elif op == "brackets":
            n = data.draw(st.integers(1, 3000))
            raw[i:i] = data.draw(st.sampled_from([b"[", b"{", b'{"a":'])) * n
    _decodes_or_refuses(bytes(raw))


@FUZZ
@given(samples, st.data())
def test_field_mutated_valid_messages_decode_or_are_refused(obj: dict[str, Any], data: st.DataObject) -> None:
    node: Any = obj
    while isinstance(node, dict) and node and data.draw(st.booleans()):  # walk down a random path
        key = data.draw(st.sampled_from(sorted(node)))
        if not isinstance(node[key], dict) or not node[key]:
            break
        node = node[key]
    key = data.draw(st.sampled_from(sorted(node)) | st.text(max_size=10))
    value = data.draw(json_values | st.integers(1, 200).map(lambda n: json.loads("[" * n + "]" * n)))
    node[key] = value
    _decodes_or_refuses(json.dumps(obj).encode())


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_nesting_depth_matches_the_parsed_structure(value: Any) -> None:
    for payload in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        assert nesting_depth(payload) == _depth(value)


@FUZZ
@given(st.integers(0, 2 * MAX_DEPTH))
def test_depth_limit_is_exact(levels: int) -> None:
    payload = ("[" * levels + "]" * levels).encode()
    try:
        decode(payload)
    except InvalidPayload as exc:
        assert ("nested deeper" in str(exc)) == (levels > MAX_DEPTH)
