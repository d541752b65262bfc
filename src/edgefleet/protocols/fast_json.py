"""JSON by orjson where its result is the standard library's, by ``json`` where it is not.

Ingest parses, verifies and stores every device message: a telemetry message costs about
10 µs in ``json.loads``, 23 µs for its canonical bytes and 14 µs per JSON column written,
against 1–3 µs each in orjson (issue 14). orjson differs from ``json`` in a few places, and
each function here goes to ``json`` for exactly those, so what it returns is the standard
library's (tests/protocols/test_fast_json.py holds the two side by side on generated values):

* parsing: orjson refuses ``NaN``/``Infinity`` literals and lone surrogates that ``json``
  takes (those it refuses, ``json`` then parses), and reads an integer beyond 64 bits as a
  float (a parsed value holding a float of magnitude 2**63 or more is parsed again by ``json``);
* writing: orjson writes ``NaN``/``Infinity`` as ``null`` (``json`` refuses them, or writes
  them non-standard), writes 2.5e-05 as ``0.000025`` and 1e-07 as ``1e-7``, refuses integers
  beyond 64 bits and dict keys that are not strings.

Pure: nothing of ours imported.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_HUGE = 9.2e18  # below 2**63 (9.22e18): every integer orjson turns into a float is at least this large
# Floats below 1e-4 are where the two writers differ: json writes 2.5e-05 and 1e-07 (two
# exponent digits), orjson 0.000025 and 1e-7. Either form in orjson's output (a cheap
# substring test first, then as a number, not inside a string) sends the value to json.
_TINY = re.compile(rb"[:,\[]-?0\.0000|[0-9]e-[0-9](?![0-9])")
# What json does not write natively (datetimes, dataclasses, subclasses of str, int, dict,
# list) orjson refuses too, so json writes it, or refuses it, as it always did.
_AS_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``, by orjson where that gives the same value.

    Raises:
        ValueError: not valid JSON (``json.JSONDecodeError``, as ``json.loads``).
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # what orjson refuses and json may take (NaN, a lone surrogate): json decides
    if not _no_huge_float(value):  # perhaps an integer beyond 64 bits that orjson read as a float
        return json.loads(data)
    return value


def _no_huge_float(value: Any) -> bool:
    """No float of magnitude 2**63 or more in ``value``: orjson reads every integer beyond
    64 bits (at least 2**63 in magnitude) as such a float, ``json`` as an int. A float that
    large in the input sends it to ``json`` too, which reads it as orjson would. A walk of
    the parsed value (about 2 µs for a telemetry message) instead of a scan of the text for
    long digit runs (9 µs: every digit of a seq, a timestamp or a signature is a start)."""
    kind = type(value)
    if kind is float:
        return -_HUGE < value < _HUGE
    if kind is not dict and kind is not list:
        return True
    todo = [value]
    while todo:
        container = todo.pop()
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is float:
                if not -_HUGE < item < _HUGE:
                    return False
            elif kind is dict or kind is list:
                todo.append(item)
    return True


def finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (dicts, lists and tuples walked — orjson
    writes a tuple as a list —, no call per item)."""
    kind = type(value)
    if kind is float:
        return value - value == 0.0  # NaN and ±inf give NaN
    if kind is not dict and kind is not list and kind is not tuple:
        return True
    todo = [value]
    while todo:
        container = todo.pop()
        for item in container.values() if type(container) is dict else container:
            kind = type(item)
            if kind is float:
                if item - item != 0.0:
                    return False
            elif kind is dict or kind is list or kind is tuple:
                todo.append(item)
    return True


def dumps_column(value: Any) -> str:
    """A JSON column's text: ``json.dumps(value)``'s JSON value (the spacing may differ).

    ``json.dumps`` writes (or refuses) what orjson would write otherwise: a NaN or an
    infinity, an integer beyond 64 bits, a key that is not a string, a subclass.
    """
    try:
        out = orjson.dumps(value, option=_AS_JSON)
    except TypeError:  # orjson.JSONEncodeError: a non-string key, a huge int, a type json may know
        return json.dumps(value)
    if b"null" in out and not finite(value):  # orjson wrote a NaN or an infinity as null
        return json.dumps(value)
    return out.decode()


def canonical(value: Any) -> bytes | None:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False).encode()``, by orjson; None where orjson's bytes could differ or
    ``json`` would refuse (the caller then asks ``json``, for the bytes or the error)."""
    try:
        out = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | _AS_JSON)
    except TypeError:
        return None
    if b"null" in out and not finite(value):  # NaN and infinities come out as null
        return None
    if (b"0.0000" in out or b"e-" in out) and (_TINY.search(out) or out.lstrip(b"-").startswith(b"0.0000")):
        return None
    return out


def canonical_ascii(value: Any) -> bytes | None:
    """``json.dumps(value, sort_keys=True, separators=(",", ":")).encode()`` (ASCII escapes,
    as ``json`` writes by default), by orjson; None where the bytes could differ: a NaN or an
    infinity, or any character beyond ASCII (``json`` writes it as ``\\uXXXX``), which the
    caller then leaves to ``json``, and DEL (``\\x7f``: ASCII, but ``json`` writes it as
    ``\\u007f`` and orjson as itself). Otherwise ``ensure_ascii`` changes nothing, so
    ``canonical``'s bytes are the answer."""
    out = canonical(value)
    return out if out is not None and out.isascii() and b"\x7f" not in out else None


__all__ = ["canonical", "canonical_ascii", "dumps_column", "finite", "loads"]
