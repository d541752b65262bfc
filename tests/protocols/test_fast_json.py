"""fast_json gives what the standard library gives: the same parsed values, the same canonical
bytes (what report signatures cover), the same JSON column values, and the same refusals,
on generated values that hit every place where orjson differs (NaN and infinities, integers
beyond 64 bits, floats below 1e-4, lone surrogates, non-string keys, subclasses)."""

from __future__ import annotations

import enum
import json
from datetime import datetime, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgefleet.protocols import decode, fast_json
from edgefleet.protocols.canonical import NotCanonical, canonical_bytes

_text = st.text(max_size=10) | st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "é", "😀", "0.0000", "1e-5", "null", ""])
_floats = (st.floats(allow_nan=True, allow_infinity=True)
           | st.floats(min_value=-1e-3, max_value=1e-3)  # where json writes 1e-05 and orjson 0.00001
           | st.sampled_from([1e-5, 2.5e-5, 1e-7, -3e-9, 1e-10, 1e16, 1.5e16, 1e22, 5e-324, -0.0, 0.0001]))
_scalars = (st.none() | st.booleans() | _text | _floats
            | st.integers(min_value=-2**70, max_value=2**70) | st.sampled_from([2**63, -2**63 - 1, 2**64, 10**19, 2**63 - 1, -2**63, 2**64 - 1]))
def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # a named function, not a lambda: hypothesis describes a lambda by walking sys.modules,
    # which a background import in the same worker (the controller's Evidently warm-up) can
    # change meanwhile ("dictionary changed size during iteration", seen once in CI)
    return st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(_text, inner, max_size=4)


_values = st.recursive(_scalars, _containers, max_leaves=20)


def _json_canonical(value: object) -> bytes | type[Exception]:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        return type(exc)
    except UnicodeEncodeError:
        return UnicodeEncodeError


@settings(max_examples=600, deadline=None)
@given(_values)
def test_canonical_is_jsons_bytes_or_none(value: object) -> None:
    out = fast_json.canonical(value)
    if out is not None:
        assert out == _json_canonical(value)


@settings(max_examples=600, deadline=None)
@given(_values)
def test_report_canonical_bytes_are_unchanged_and_so_are_its_refusals(value: object) -> None:
    obj = {"v": value, "sig": "x", "seq": 1}
    expected = _json_canonical({"v": value, "seq": 1})
    if isinstance(expected, bytes):
        assert canonical_bytes(obj) == expected
    else:
        with pytest.raises((NotCanonical, UnicodeEncodeError)):
            canonical_bytes(obj)


@settings(max_examples=600, deadline=None)
@given(_values)
def test_a_column_holds_the_json_value_json_would_store(value: object) -> None:
    try:
        expected = json.dumps(value)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            fast_json.dumps_column(value)
        return
    stored = fast_json.dumps_column(value)
    assert repr(json.loads(stored)) == repr(json.loads(expected))  # repr: 1 and 1.0, NaN, key order


@settings(max_examples=600, deadline=None)
@given(_values)
def test_loads_reads_what_json_reads(value: object) -> None:
    for text in {json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, separators=(",", ":"))}:
        assert repr(fast_json.loads(text)) == repr(json.loads(text))
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            continue
        assert repr(fast_json.loads(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("text", [
    "NaN", "[Infinity, -Infinity]", '"\\ud800"', '{"a": "\\udfff x"}', "18446744073709551616", "-9223372036854775809",
    "123456789012345678901234567890", "1e400", '{"a": 1, "a": 2}', "[1e-5, 1E5, -0, 0.1]", '"abc', "[1,]", "", "nul",
    '{"s": "1234567890123456789012"}', "\t[ 1 ]\n",
    # either side of 64 bits, where orjson turns an integer into a float, and floats that large
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551615",
    "[1.0e19, 9.2e18, -9.3e18, 9199999999999999999]", '{"seq": 1796481394316889, "t": "2026-12-05T14:36:34Z"}',
])
def test_loads_takes_and_refuses_what_json_does(text: str) -> None:
    try:
        expected = repr(json.loads(text))
    except ValueError as exc:
        with pytest.raises(ValueError) as caught:
            fast_json.loads(text)
        assert str(caught.value) == str(exc)  # the same message: errors read as before
        return
    assert repr(fast_json.loads(text)) == expected


class _Colour(str, enum.Enum):
    RED = "red"


class _Key(str):
    pass


def test_types_json_refuses_stay_refused_and_subclasses_are_written_as_json_writes_them() -> None:
    with pytest.raises(TypeError):
        fast_json.dumps_column({"at": datetime(2026, 1, 1, tzinfo=timezone.utc)})
    assert fast_json.canonical({"at": datetime(2026, 1, 1, tzinfo=timezone.utc)}) is None
    for value in ({_Key("k"): 1}, {"c": _Colour.RED}, {1: "integer key"}, [2**64]):
        assert repr(json.loads(fast_json.dumps_column(value))) == repr(json.loads(json.dumps(value)))
        out = fast_json.canonical(value)
        assert out is None or out == _json_canonical(value)


@pytest.mark.parametrize("value", [(None, float("inf")), {"a": (1, float("nan"))}, [(float("-inf"),)], ((float("nan"),),)])
def test_a_nan_or_an_infinity_inside_a_tuple_is_not_written_as_null(value: object) -> None:
    """orjson writes a tuple as a list and a NaN as null: the finiteness walk enters tuples too
    (a CI run found ``(None, inf)`` written as ``[null,null]`` where json refuses it)."""
    assert not fast_json.finite(value)
    assert fast_json.canonical(value) is None and fast_json.canonical_ascii(value) is None
    assert fast_json.dumps_column(value) == json.dumps(value)


def test_a_message_with_nan_or_a_huge_number_decodes_as_it_did() -> None:
    """The wire decoder: NaN (which orjson refuses) and a 20-digit integer (which orjson
    would read as a float) take json's path, so a message validates, or fails, as before."""
    base = {"schema": "fleet.status/1", "device_id": "cam-1", "online": True}
    ok = decode(json.dumps(base).encode())
    assert ok.device_id == "cam-1"
    with_nan = decode(json.dumps({**base, "extra": float("nan")}).encode())  # an unknown field: ignored
    assert with_nan.device_id == "cam-1"
    assert repr(fast_json.loads(json.dumps({"n": 10**20}))) == repr({"n": 10**20})


def _json_ascii(value: object) -> bytes | type[Exception]:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        return type(exc)


@settings(max_examples=600, deadline=None)
@given(_values)
@example({"\x7f": None})
def test_canonical_ascii_is_jsons_default_escaped_bytes_or_none(value: object) -> None:
    """What TUF metadata files and device settings are written with: json's default
    ``ensure_ascii`` bytes, or None (a NaN, a character beyond ASCII: json writes those)."""
    out = fast_json.canonical_ascii(value)
    if out is not None:
        assert out == _json_ascii(value)
    assert fast_json.canonical_ascii({"name": "café"}) is None
    assert fast_json.canonical_ascii({"\x7f": None}) is None  # json escapes DEL, orjson does not
    assert fast_json.canonical_ascii(["a\x7fb"]) is None
    assert fast_json.canonical_ascii({"b": 1, "a": [True, None, "x\n"]}) == b'{"a":[true,null,"x\\n"],"b":1}'
