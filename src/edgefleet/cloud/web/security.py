"""Browser-facing security headers: a strict Content-Security-Policy on every response.

``SecurityHeadersMiddleware`` (pure ASGI, installed by ``install_web``) adds to every HTTP
response — UI pages, static files, API JSON, errors — the headers below, unless the
response already carries a ``Content-Security-Policy`` of its own. Only one route sets its
own: the Evidently drift report (third-party HTML with inline scripts), served with
``REPORT_CSP``, whose ``sandbox allow-scripts`` puts it in an opaque origin (no cookies, no
same-origin API calls, no reach into the parent page) and whose ``connect-src 'none'``
forbids any network request from its scripts.

Pages therefore carry no inline ``<script>``, no ``on…=`` handlers and no ``style=``
attributes: behaviour lives in ``/ui/static/*.js`` (data passed in ``data-*`` attributes
or ``<script type="application/json">`` blocks), looks in ``/ui/static/*.css``.

FastAPI's Swagger UI (``/api/v1/docs``) is the one page built elsewhere: its scripts and
styles come from the jsDelivr CDN and it has one inline bootstrap script, so for that
path the policy names the CDN and allows that script by its SHA-256 hash (computed from
the page's own body), never ``'unsafe-inline'``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-src 'self'; frame-ancestors 'self'; form-action 'self'")
#: the drift report: Evidently's self-contained HTML needs inline scripts and styles, so it
#: runs sandboxed in an opaque origin with no network at all.
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
              "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'; "
              "form-action 'none'; base-uri 'none'; object-src 'none'; frame-ancestors 'self'")
DOCS_CDN = "https://cdn.jsdelivr.net"
HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "SAMEORIGIN",
}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def docs_csp(body: bytes) -> str:
    """The policy of a Swagger UI page: the CDN's files, and its inline scripts by hash."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'"
                      for s in _INLINE_SCRIPT.findall(body))
    return (f"default-src 'none'; script-src {DOCS_CDN} {hashes}; style-src {DOCS_CDN}; "
            "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


class SecurityHeadersMiddleware:
    """Adds CSP, nosniff, Referrer-Policy and X-Frame-Options to every HTTP response.

    Args:
        app: the ASGI app to wrap.
        docs_paths: paths served by FastAPI's Swagger UI/ReDoc (see ``docs_csp``).
    """

    def __init__(self, app: ASGIApp, docs_paths: tuple[str, ...] = ()):
        self.app = app
        self.docs_paths = frozenset(p for p in docs_paths if p)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") in self.docs_paths:
            await self._docs(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_security_headers(list(message.get("headers", [])), CSP)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the (small) docs page so its inline script's hash can go in the policy."""
        start: Message | None = None
        body = bytearray()

        async def buffer(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    assert start is not None
                    start["headers"] = with_security_headers(list(start.get("headers", [])), docs_csp(bytes(body)))
                    await send(start)
                    await send({"type": "http.response.body", "body": bytes(body)})
                return
            await send(message)

        await self.app(scope, receive, buffer)


def with_security_headers(headers: list[tuple[bytes, bytes]], csp: str) -> list[tuple[bytes, bytes]]:
    """``headers`` plus the security headers it lacks (a response's own CSP is kept)."""
    present = {k.lower() for k, _ in headers}
    out = list(headers)
    if b"content-security-policy" not in present:
        out.append((b"content-security-policy", csp.encode()))
    for name, value in HEADERS.items():
        if name.encode() not in present:
            out.append((name.encode(), value.encode()))
    return out
