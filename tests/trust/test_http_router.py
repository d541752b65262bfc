"""The controller's FastAPI router, on a real uvicorn on 127.0.0.1: a device verifies,
downloads, and resumes through it exactly as through the standard-library server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from edgefleet.registry.tuf import DeviceVerifier, ResumableFetcher, TufResolver
from edgefleet.registry.tuf.http import tuf_router

from .conftest import HW, TrustEnv, payload


@pytest.fixture
def uvicorn_url(env: TrustEnv) -> Iterator[str]:
    app = FastAPI()
    app.include_router(tuf_router(TufResolver(env.image, env.director), env.blobs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(5)


def test_device_updates_and_resumes_through_the_fastapi_router(env: TrustEnv, uvicorn_url: str) -> None:
    data = payload(700_000, seed=13)
    t = env.release(data)
    env.director.assign("dev-1", HW, {"control": t.name})
    state = env.root / "state-uv"
    env.device(state=state)  # provision
    dev = DeviceVerifier.for_controller(uvicorn_url, "dev-1", HW, state, fetcher=ResumableFetcher(gap_timeout=5, deadline=30))
    target = dev.check().targets[0]
    part = state / "downloads" / f"{target.digest}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data[:300_000])  # left by an earlier, interrupted run
    assert dev.download(target, env.root / "out").read_bytes() == data
    assert dev.fetcher.stats.bytes_received < 300_000 + 700_000 - 300_000 + 50_000
