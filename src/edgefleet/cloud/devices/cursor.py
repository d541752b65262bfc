"""Opaque page cursors for the fleet views: a position in id order, bound to the filters.

A cursor says "the page after (or before) device id X, for these filters". It is
``base64url(json)`` plus a check over the payload and the filters' key, so a cursor that
was cut, edited, made up or reused with other filters is refused (``BadCursor``, a 400
problem) instead of silently paging something else. It carries no authority: anyone who
may list devices may list every position, so a check (not a secret key) is enough, and
any controller replica reads the cursors of any other.

Pure: no database, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Literal

from ..errors import BadRequest

VERSION = 1
MAX_LENGTH = 512  # what the API's query parameter allows
_CONTEXT = b"edgefleet.cursor/1\0"
Direction = Literal["after", "before"]


class BadCursor(BadRequest):
    """The cursor is not one this API issued for these filters."""

    code = "E_BAD_CURSOR"


@dataclass(frozen=True)
class Cursor:
    direction: Direction
    key: str  # the device id (or another stable sort key) the page starts after / ends before


def _check(body: bytes, scope: str) -> str:
    return hashlib.sha256(_CONTEXT + scope.encode() + b"\0" + body).hexdigest()[:16]


def encode(cursor: Cursor, scope: str) -> str:
    """The opaque string for ``cursor`` under ``scope`` (the filters' canonical key)."""
    body = json.dumps({"v": VERSION, "d": cursor.direction, "k": cursor.key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + _check(body, scope)


def decode(text: str, scope: str) -> Cursor:
    """Read a cursor issued by ``encode`` under the same ``scope``.

    Raises:
        BadCursor: garbage, a tampered payload, another version, or other filters.
    """
    if len(text) > MAX_LENGTH:
        raise BadCursor("the cursor is too long; use next_cursor from the previous page as it is")
    payload, sep, check = text.partition(".")
    try:
        body = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        raise BadCursor("the cursor is not one this API issued; start again without a cursor") from None
    if not sep or not hmac.compare_digest(check, _check(body, scope)):
        raise BadCursor("the cursor was altered or belongs to other filters; start again without a cursor")
    try:
        data = json.loads(body)
    except ValueError:
        raise BadCursor("the cursor is not one this API issued; start again without a cursor") from None
    if not isinstance(data, dict) or data.get("v") != VERSION or data.get("d") not in ("after", "before") \
            or not isinstance(data.get("k"), str):
        raise BadCursor("the cursor is from another version of this API; start again without a cursor")
    return Cursor(direction=data["d"], key=data["k"])


def page_sorted(keys: list[str], *, limit: int, cursor: str | None, scope: str) -> tuple[slice, str | None, str | None]:
    """Page an ascending list of unique ``keys`` held in memory (e.g. a rollout's member
    ids): the slice of this page and the (next, prev) cursors, the same as the database pages.

    Raises:
        BadCursor: the cursor is not one issued under ``scope``.
    """
    import bisect

    at = decode(cursor, scope) if cursor else None
    if at is None:
        lo, hi = 0, min(len(keys), limit)
    elif at.direction == "after":
        lo = bisect.bisect_right(keys, at.key)
        hi = min(len(keys), lo + limit)
    else:
        hi = bisect.bisect_left(keys, at.key)
        lo = max(0, hi - limit)
    nxt = encode(Cursor("after", keys[hi - 1]), scope) if hi < len(keys) and hi > lo else None
    prev = encode(Cursor("before", keys[lo]), scope) if lo > 0 and hi > lo else None
    return slice(lo, hi), nxt, prev
