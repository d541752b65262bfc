"""The C-encoder canonical JSON writes exactly what securesystemslib's encode_canonical writes
(the bytes every TUF signature covers), and refuses what it refuses."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from securesystemslib.exceptions import FormatError
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.api.serialization.json import CanonicalJSONSerializer, JSONSerializer

from edgefleet.registry.tuf.canonical import canonical_json
from edgefleet.registry.tuf.signing import sign

# strings that hit every escape rule: quotes, backslashes, control characters, non-ASCII,
# and digits next to e/E/. inside strings (which are not floats)
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "✓", "😀", "1.5", "2e3", "9E", "a\\\"b", ""])
_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | _text
            | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1.0, -0.0, 1e16, 5e-324]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                     | st.dictionaries(_text, inner, max_size=4), max_leaves=25)


def _reference(obj: object) -> bytes | type[Exception]:
    try:
        text = encode_canonical(obj)  # type: ignore[arg-type]
    except FormatError:
        return FormatError
    assert text is not None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return UnicodeEncodeError


def _ours(obj: object) -> bytes | type[Exception]:
    try:
        return canonical_json(obj)
    except FormatError:
        return FormatError
    except UnicodeEncodeError:
        return UnicodeEncodeError


@settings(max_examples=600, deadline=None)
@given(_json)
@example((None, float("inf")))  # a CI run's find: orjson wrote the tuple's infinity as null
@example({"a": [1, (2, float("nan"))]})
def test_the_same_bytes_or_the_same_refusal_as_encode_canonical(obj: object) -> None:
    assert _ours(obj) == _reference(obj)


def test_a_json_string_inside_a_document_takes_the_fast_path_and_control_characters_do_not() -> None:
    """A device's settings travel as a JSON string in its targets document: quotes and floats
    inside a string are not the C encoder's differences, so no slow fallback per device."""
    from edgefleet.registry.tuf.canonical import _fast

    settings = '{"capture":{"post_seconds":1.0,"path":"C:\\\\x"},"telemetry_period_s":60.0}'
    doc = {"x-edgefleet": {"settings": settings, "generation": 3}, "version": 1}
    assert _fast(doc) is not None and _fast(doc) == _reference(doc)
    for tricky in ("a\\nb", "a\\\nb", 'q\\"', "\\"):  # escaped backslashes next to n, a quote
        assert _ours({"s": tricky}) == _reference({"s": tricky})
    assert _fast({"s": "two\nlines"}) is None and _ours({"s": "two\nlines"}) == _reference({"s": "two\nlines"})
    assert _fast({"f": 1.5}) is None and _ours({"f": 1.5}) is FormatError


@pytest.mark.parametrize("obj", [
    {"b": 1, "a": [True, False, None], "c": {"z": "q\"uote", "y": "back\\slash"}},
    {"line": "two\nlines", "tab": "\t", "nul": "\x00"},  # canonical JSON leaves control characters raw
    {"k": "1.5e3", "n": 15, "big": 2**64},
    {"ü": "ünïcödé ✓ 😀"},
    [],
    {},
])
def test_known_objects(obj: object) -> None:
    assert canonical_json(obj) == encode_canonical(obj).encode()  # type: ignore[union-attr]


@pytest.mark.parametrize("obj", [{"x": 1.5}, [0.0], {"a": [1, {"b": 2e20}]}, {"x": math.inf}, {"x": math.nan},
                                 {1, 2}, {"x": datetime.now(timezone.utc)}])
def test_what_canonical_json_refuses_is_refused(obj: object) -> None:
    with pytest.raises(FormatError):
        canonical_json(obj)


def test_a_signature_made_with_it_verifies_under_python_tufs_own_serializer() -> None:
    """What a device does: python-tuf recomputes the canonical bytes with its own serializer."""
    signer = CryptoSigner.generate_ed25519()
    t = Targets(version=3, expires=datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1))
    t.targets["model-é.bundle"] = TargetFile(length=123, hashes={"sha256": "ab" * 32}, path="model-é.bundle",
                                             unrecognized_fields={"custom": {"slots": ["control"], "note": "a\nb"}})
    t.unrecognized_fields["x-binding"] = {"generation": 7, "settings": "q\"\\"}
    md = Metadata(t)
    assert canonical_json(t.to_dict()) == CanonicalJSONSerializer().serialize(t)
    data = sign(md, [signer])
    parsed = Metadata.from_bytes(data)
    signer.public_key.verify_signature(parsed.signatures[signer.public_key.keyid],
                                       CanonicalJSONSerializer().serialize(parsed.signed))


def test_sign_writes_the_bytes_python_tufs_own_sign_and_serializer_write() -> None:
    """Ed25519 is deterministic: the same key over the same document gives the same bytes."""
    signers = [CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()]  # a threshold of two
    t = Targets(version=9, expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    t.targets["m.bundle"] = TargetFile(length=5, hashes={"sha256": "cd" * 32}, path="m.bundle",
                                       unrecognized_fields={"custom": {"slots": ["shadow"], "name": "ü"}})
    ours = sign(Metadata(t), signers)
    theirs = Metadata(t)
    for s in signers:
        theirs.sign(s, append=True)
    assert ours == theirs.to_bytes(JSONSerializer(compact=True))
