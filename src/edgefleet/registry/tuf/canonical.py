"""OLPC canonical JSON, the bytes every TUF signature covers, written by the C JSON encoder.

``securesystemslib.formats.encode_canonical`` walks the object in Python; a director
signs three documents per device per wave (issue 14), and for a device's targets document
the C encoder takes the serialisation from 49 to 35 µs (``to_dict`` included).
``json.dumps`` with sorted keys, no whitespace and UTF-8 left as is writes the same bytes,
with two exceptions: it escapes control characters (canonical JSON escapes only ``"`` and
``\\``, as ``json.dumps`` does) and it writes floats (canonical JSON has
none, and refuses them). ``canonical_json`` therefore uses the C encoder and falls back to
``encode_canonical`` whenever its output holds an escape other than ``\\"`` and ``\\\\``
(a control character) or a number with a fraction or exponent (outside a string: a
device's settings travel as a JSON string inside its targets document, quotes, floats and
all, and take the fast path). Its bytes, and its errors, are those of ``encode_canonical``
for every object whose dict keys are strings, as TUF documents' are (a non-string key,
which ``encode_canonical`` refuses, becomes a string here, as in any JSON);
tests/registry/test_canonical_fast.py checks that on generated objects.
Devices verify with python-tuf's own serializer: nothing changes on their side.
"""

from __future__ import annotations

import re
from typing import Any

from securesystemslib.formats import encode_canonical

from ...protocols import fast_json

# A string literal, escapes included (the unrolled form: no alternation per character);
# a digit followed by what only a float's digits are followed by; an escape other than \\".
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_FLOAT = re.compile(rb"[0-9][.eE]")
_OTHER_ESCAPE = re.compile(rb'\\[^"]')


def _fast(obj: Any) -> bytes | None:
    """The canonical bytes by the C encoder, or None where they may differ from ``encode_canonical``."""
    out = fast_json.canonical(obj)  # json.dumps's sorted compact UTF-8, by orjson where equal
    if out is None:  # a float, NaN, a non-string key or a huge integer: encode_canonical decides
        return None
    # Escapes, left to right: every run of backslashes in the output starts on an escape, so
    # dropping the escaped backslashes (pairs) leaves a backslash only before the escaped
    # character of a quote or of a control character, which canonical JSON leaves raw.
    if b"\\" in out and _OTHER_ESCAPE.search(out.replace(b"\\\\", b"")):
        return None
    if _FLOAT.search(out) and _FLOAT.search(_STRING.sub(b'""', out)):
        return None  # a float outside every string: encode_canonical refuses it
    return out


def canonical_json(obj: Any) -> bytes:
    """``encode_canonical(obj)`` as UTF-8 bytes. Raises what ``encode_canonical`` raises
    (``FormatError`` for a float or a value JSON cannot carry)."""
    out = _fast(obj)
    if out is None:
        text = encode_canonical(obj)
        assert text is not None  # noqa: S101 - no output_function: it returns the text
        out = text.encode("utf-8")
    return out


__all__ = ["canonical_json"]
