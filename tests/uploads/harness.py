"""Real pieces for the upload tests: a uvicorn server on loopback and a TCP link we can cut."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Header, HTTPException

from edgefleet.cloud.uploads import StoredClip, UploadStore, make_uploads_router
from edgefleet.protocols import Event, ModelOutput
from edgefleet.registry import LocalBlobStore

TOKENS = {"tok-a": "dev-a", "tok-b": "dev-b"}


def authenticate_device(authorization: str | None = Header(default=None)) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="missing bearer token")
    device = TOKENS.get(authorization.removeprefix("Bearer "))
    if device is None:
        raise HTTPException(status_code=401, detail="unknown token")
    return device


def make_event(device_id: str = "dev-a", *, priority: int = 0) -> Event:
    return Event(
        device_id=device_id,
        event_id=uuid.uuid4().hex,
        trigger="disagreement",
        priority=priority,
        control=ModelOutput(label="3", score=0.41),
        candidate=ModelOutput(label="8", score=0.77),
        frame_index=12,
    )


def clip_bytes(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


@dataclass
class ControllerUnderTest:
    url: str
    blob_store: LocalBlobStore
    store: UploadStore
    staging: Path
    stored: list[StoredClip] = field(default_factory=list)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


def start_controller(tmp: Path, *, max_clip_bytes: int = 8 * 1024 * 1024) -> ControllerUnderTest:
    blob_store = LocalBlobStore(tmp / "blobs")
    stored: list[StoredClip] = []
    router = make_uploads_router(
        staging_dir=tmp / "staging",
        blob_store=blob_store,
        authenticate_device=authenticate_device,
        on_clip_stored=stored.append,
        max_clip_bytes=max_clip_bytes,
        max_chunk_bytes=1024 * 1024,
    )
    app = FastAPI()
    app.include_router(router, prefix="/api/v1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return ControllerUnderTest(
        url=f"http://127.0.0.1:{port}", blob_store=blob_store, store=router.upload_store,  # type: ignore[attr-defined]
        staging=tmp / "staging", stored=stored, server=server, thread=thread,
    )


class LinkProxy:
    """A TCP relay on loopback between the device and the controller.

    ``cut_after``: once that many bytes went device→controller, every connection is cut
    and new ones are refused until ``heal()``. ``down()``: accept and close at once,
    counting connection attempts.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.forwarded = 0
        self.attempts = 0
        self.cut_after: int | None = None
        self._is_down = False
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self) -> None:
        with self._lock:
            self._is_down = True
        self._cut_all()

    def heal(self) -> None:
        with self._lock:
            self._is_down = False
            self.cut_after = None

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._cut_all()

    def _cut_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.attempts += 1
                down = self._is_down
            if down:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if outbound:
                    with self._lock:
                        limit = self.cut_after
                        if limit is not None and self.forwarded + len(data) > limit:
                            data = data[: max(0, limit - self.forwarded)]
                            self._is_down = True
                        self.forwarded += len(data)
                        cut = self._is_down
                    if data:
                        dst.sendall(data)
                    if cut:
                        self._cut_all()
                        break
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
