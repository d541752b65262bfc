"""Fixtures for the trust core: a real image repository + director served over loopback HTTP.

``TrustEnv`` holds the cloud side (keyring, metadata store, blob store, image repository,
director) and a ``ThreadingHTTPServer`` on 127.0.0.1 whose handler is the production
``make_handler`` plus test hooks: ``overrides`` (path → bytes an attacker serves
instead), ``drop_after`` (close the connection after N body bytes, once per entry),
``drip`` (bytes per tick, seconds per tick) and a request log.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from edgefleet.registry import LocalBlobStore
from edgefleet.registry.tuf import (
    DeviceVerifier,
    Director,
    ImageRepository,
    ImageTarget,
    KeyRing,
    LocalMetadataStore,
    Resolved,
    ResumableFetcher,
    TufResolver,
    make_handler,
    provision,
)

HW = "jetson-orin-nano"


@dataclass
class ServerHooks:
    overrides: dict[str, bytes] = field(default_factory=dict)
    drop_after: list[int] = field(default_factory=list)
    drip: tuple[int, float] | None = None
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    body_bytes_sent: int = 0
    sent: list[tuple[str | None, int]] = field(default_factory=list)  # (Range, body bytes)
    lock: threading.Lock = field(default_factory=threading.Lock)


def start_server(resolver: TufResolver, blobs: LocalBlobStore, hooks: ServerHooks) -> ThreadingHTTPServer:
    base = make_handler(resolver, blobs)

    class Handler(base):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            with hooks.lock:
                hooks.requests.append((path, self.headers.get("Range")))
            if hooks.ignore_range and "Range" in self.headers:
                del self.headers["Range"]
            if path in hooks.overrides:
                data = hooks.overrides[path]
                self.send_resolved(Resolved(data=data, length=len(data), content_type="application/octet-stream"))
                return
            super().do_GET()

        def write_body(self, res: Resolved, start: int, end: int) -> None:
            if res.data is not None and res.content_type == "application/json":
                self.wfile.write(res.data[start : end + 1])
                return
            body = res.data[start : end + 1] if res.data is not None else _read_blob(blobs, res, start, end)
            with hooks.lock:
                limit = hooks.drop_after.pop(0) if hooks.drop_after else None
            if limit is not None:
                body = body[:limit]
            if hooks.drip is not None:
                n, delay = hooks.drip
                for i in range(0, len(body), n):
                    self.wfile.write(body[i : i + n])
                    self.wfile.flush()
                    with hooks.lock:
                        hooks.body_bytes_sent += len(body[i : i + n])
                    time.sleep(delay)
            else:
                self.wfile.write(body)
                with hooks.lock:
                    hooks.body_bytes_sent += len(body)
            with hooks.lock:
                hooks.sent.append((self.headers.get("Range"), len(body)))
            if limit is not None:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

    srv = _QuietServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        pass  # clients the tests kill or time out leave broken pipes behind


def _read_blob(blobs: LocalBlobStore, res: Resolved, start: int, end: int) -> bytes:
    assert res.blob_digest is not None
    with blobs.open(res.blob_digest) as f:
        f.seek(start)
        return f.read(end - start + 1)


@dataclass
class TrustEnv:
    root: Path
    keyring: KeyRing
    store: LocalMetadataStore
    blobs: LocalBlobStore
    image: ImageRepository
    director: Director
    hooks: ServerHooks
    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def release(self, data: bytes, *, model: str = "digits", version: str = "1.0.0",
                hardware_ids: tuple[str, ...] = (HW,)) -> ImageTarget:
        digest = self.blobs.put(data)
        return self.image.release(
            digest, model=model, version=version, hardware_ids=list(hardware_ids),
            manifest_digest="0" * 64, provenance={"source": "test"},
        )

    def target_path(self, target: ImageTarget) -> str:
        d, _, b = target.name.rpartition("/")
        return f"/tuf/image/targets/{d}/{target.digest}.{b}"

    def device(self, device_id: str = "dev-1", hardware_id: str = HW, *, state: Path | None = None,
               fetcher: ResumableFetcher | None = None, **kw: object) -> DeviceVerifier:
        state = state or self.root / f"state-{device_id}"
        if not (state / "trusted" / "image-root.json").exists():
            provision(state, director_root=self.director.root_bytes(1), image_root=self.image.root_bytes(1))
        return DeviceVerifier.for_controller(
            self.url, device_id, hardware_id, state,
            fetcher=fetcher or ResumableFetcher(gap_timeout=2.0, deadline=20.0, backoff=0.01), **kw,
        )


def make_env(tmp_path: Path, *, root_threshold: int = 1, root_keys: int = 1, **repo_kw: object) -> TrustEnv:
    ring = KeyRing.init(tmp_path / "keys", root_threshold=root_threshold, root_keys=root_keys)
    store = LocalMetadataStore(tmp_path / "meta", fsync=False)
    blobs = LocalBlobStore(tmp_path / "blobs")
    image = ImageRepository.create(store, blobs, ring, bins_bits=4, **repo_kw)  # type: ignore[arg-type]
    director = Director.create(store, ring, image, **repo_kw)  # type: ignore[arg-type]
    hooks = ServerHooks()
    srv = start_server(TufResolver(image, director), blobs, hooks)
    return TrustEnv(tmp_path, ring, store, blobs, image, director, hooks, srv)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[TrustEnv]:
    e = make_env(tmp_path)
    yield e
    e.server.shutdown()
    e.server.server_close()


@pytest.fixture
def env_factory(tmp_path: Path) -> Iterator[Callable[..., TrustEnv]]:
    made: list[TrustEnv] = []

    def factory(**kw: object) -> TrustEnv:
        sub = tmp_path / f"env{len(made)}"
        sub.mkdir()
        e = make_env(sub, **kw)  # type: ignore[arg-type]
        made.append(e)
        return e

    yield factory
    for e in made:
        e.server.shutdown()
        e.server.server_close()


def payload(n: int, seed: int = 0) -> bytes:
    return os.urandom(n) if seed == 0 else bytes((i * seed) % 251 for i in range(n))
