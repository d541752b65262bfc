"""A real webhook receiver on loopback (stdlib ``http.server`` in a thread).

It verifies each request's signature with *its* copy of the secret (``verify``), records
what arrived, and can be taken down and brought back on the same port, slowed down, or
made to answer an error status.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgefleet.cloud.broker import free_port
from edgefleet.cloud.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, SignatureError, verify


@dataclass
class Received:
    delivery_id: str
    signature: str
    body: bytes
    at: float
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str = ""
    port: int = field(default_factory=free_port)
    delay_s: float = 0.0
    status: int = 200
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                sig = self.headers.get(SIGNATURE_HEADER) or ""
                try:
                    verify(outer.secret, sig, body, time.time())
                    ok = True
                except SignatureError:
                    ok = False
                with outer._lock:
                    outer.received.append(Received(self.headers.get(DELIVERY_HEADER) or "", sig, body, time.time(), ok))
                status = outer.status if ok else 401
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, type_prefix: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received if r.verified and r.event["type"].startswith(type_prefix)]
