"""Bound JSON request bodies before FastAPI parses them (pure ASGI middleware).

Python's ``json`` recurses once per nesting level, so a 5,000-deep ``[[[[…`` body ends in
a ``RecursionError`` (a 500) inside FastAPI. ``JsonBodyLimitMiddleware`` buffers a body
that FastAPI would parse as JSON (``Content-Type`` absent, ``application/json`` or
``…+json``), answers 413 past ``max_bytes`` and 400 past ``max_depth`` levels of arrays
and objects, and otherwise replays the buffered body to the app unchanged. Other bodies
(multipart model pushes, upload chunks) stream through untouched.

``json_safe`` makes validation errors renderable whatever input they echo (NaN, lone
surrogates, raw bytes); ``create_app`` answers every ``RequestValidationError`` with it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_DEPTH = 64
MAX_JSON_BYTES = 2 * 1024 * 1024
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """True when ``body`` nests arrays/objects deeper than ``max_depth`` (strings ignored)."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False  # cannot be deeper than the number of openers
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return True  # FastAPI parses a body without Content-Type as JSON


class JsonBodyLimitMiddleware:
    """400 for JSON bodies nested deeper than ``max_depth``, 413 past ``max_bytes``.

    Args:
        app: the ASGI app to wrap.
        max_depth: deepest nesting of arrays and objects accepted.
        max_bytes: largest JSON body accepted.
    """

    def __init__(self, app: ASGIApp, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_JSON_BYTES):
        self.app = app
        self.max_depth = max_depth
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS") or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > self.max_bytes:
                await _answer(send, 413, f"JSON body exceeds {self.max_bytes} bytes")
                return
        if json_depth_exceeds(bytes(body), self.max_depth):
            await _answer(send, 400, f"JSON body is nested deeper than {self.max_depth} levels")
            return
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body once, then the real channel (disconnect notices)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, detail: str) -> None:
    code = "E_TOO_LARGE" if status == 413 else "E_BAD_REQUEST"  # the API's error body (problems.ErrorBody)
    payload = json.dumps({"code": code, "message": detail, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def json_safe(value: Any, *, max_str: int = 200) -> Any:
    """``value`` (a validation error list) made renderable: no NaN/inf, no surrogates, no raw
    bytes, long strings and huge integers shortened — the echo of hostile input must not
    itself fail to encode (FastAPI's default handler would answer 500)."""
    if isinstance(value, dict):
        return {str(json_safe(k, max_str=max_str)): json_safe(v, max_str=max_str) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, max_str=max_str) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else f"{str(value)[:20]}… ({len(str(value))} digits)"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = value if isinstance(value, str) else str(value)
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= max_str else text[:max_str] + f"… ({len(text)} characters)"
