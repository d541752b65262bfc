"""A real HTTP hop between an agent and the controller, on loopback, that can misbehave
the way a network (or a man-in-the-middle) does.

Every request is forwarded to the controller unchanged (method, path, query, headers,
body; Range requests included). Two faults can be switched on:

* ``freeze_director(device_id)``: from now on that device's director ``timestamp.json``
  is the copy last served — validly signed, just old. The device keeps verifying
  successfully and never learns of a new director version.
* ``damage_targets(n)``: the next ``n`` image-target responses have one byte flipped
  (same length), like a flaky link or a broken cache would deliver.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


class FaultyProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.client = httpx.Client(base_url=self.upstream, timeout=30.0, follow_redirects=False)
        self.lock = threading.Lock()
        self.frozen: dict[str, bytes | None] = {}  # device id → the timestamp served while frozen
        self.last_timestamp: dict[str, bytes] = {}
        self.damage_left = 0
        self.damaged = 0
        self.target_fetches = 0
        self.frozen_hits = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, data = proxy.forward(self.command, self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="faulty-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultyProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()

    # ----- faults -----

    def freeze_director(self, device_id: str) -> None:
        with self.lock:
            self.frozen[device_id] = self.last_timestamp.get(device_id)

    def thaw(self, device_id: str) -> None:
        with self.lock:
            self.frozen.pop(device_id, None)

    def damage_targets(self, n: int) -> None:
        with self.lock:
            self.damage_left = n

    # ----- forwarding -----

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        device = _director_timestamp_of(path)
        if device is not None:
            with self.lock:
                frozen = self.frozen.get(device)
                if frozen is not None:
                    self.frozen_hits += 1
                    return 200, [("Content-Type", "application/json"), ("Cache-Control", "no-cache")], frozen
        fwd = {k: v for k, v in headers.items() if k.lower() not in _HOP}
        r = self.client.request(method, path, headers=fwd, content=body or None)
        data = r.content
        if device is not None and r.status_code == 200:
            with self.lock:
                self.last_timestamp[device] = data
        if path.startswith("/tuf/image/targets/") and method == "GET" and r.status_code in (200, 206) and data:
            with self.lock:
                self.target_fetches += 1
                if self.damage_left > 0:
                    self.damage_left -= 1
                    self.damaged += 1
                    flipped = bytearray(data)
                    flipped[len(flipped) // 2] ^= 0xFF
                    data = bytes(flipped)
        out = [(k, v) for k, v in r.headers.items() if k.lower() not in _HOP and k.lower() != "content-encoding"]
        return r.status_code, out, data


def _director_timestamp_of(path: str) -> str | None:
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["tuf", "director"] and parts[3] == "timestamp.json":
        return parts[2]
    return None
