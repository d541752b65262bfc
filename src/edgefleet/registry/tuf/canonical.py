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

import json
import re
from typing import Any

from securesystemslib.formats import encode_canonical

# A string literal (escapes included), or a digit followed by what only a float's digits
# are followed by.
_FLOAT_OR_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|[0-9][.eE]')
# One escape of json.dumps's output: a backslash and the character after it (left to right,
# so a backslash, a backslash and an n are an escaped backslash, then a plain n).
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _fast(obj: Any) -> str | None:
    """The canonical text by the C encoder, or None where it may differ from ``encode_canonical``."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):  # what encode_canonical refuses too: let it say so
        return None
    if "\\" in text:
        for m in _ESCAPE.finditer(text):
            if m.group(1) not in '"\\':
                return None  # a control character: canonical JSON leaves it raw
    for m in _FLOAT_OR_STRING.finditer(text):
        if m.group()[0] != '"':
            return None
    return text


def canonical_json(obj: Any) -> bytes:
    """``encode_canonical(obj)`` as UTF-8 bytes. Raises what ``encode_canonical`` raises
    (``FormatError`` for a float or a value JSON cannot carry)."""
    text = _fast(obj)
    if text is None:
        text = encode_canonical(obj)
        assert text is not None  # noqa: S101 - no output_function: it returns the text
    return text.encode("utf-8")


__all__ = ["canonical_json"]
