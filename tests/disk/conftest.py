"""Disk drills: a real small tmpfs as the agent's data dir, a real HTTP hop that can hold a
download at a chosen byte, and padded models big enough to measure.

* ``small_disk(size)`` mounts a tmpfs (root only; skipped with the reason otherwise) and
  unmounts it after the test, once the agents on it have stopped.
* ``fill(dir, leave)`` takes all but ``leave`` bytes of that filesystem with a filler file
  (real allocation, ``posix_fallocate`` then writes to the last byte); ``unfill`` frees it.
* ``HoldProxy`` forwards every request to the controller unchanged (Range included) and
  counts the target bytes it serves; ``hold(offset)`` stops a target response at that byte
  of the file until ``release()``.
* ``padded_model`` is a digits model whose ONNX file carries ``size`` bytes of doc string:
  same graph, same outputs, same self-test, a bundle of the size wanted.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.cloud.demo.train import TrainedModel

from ..conftest import RunningAgent, Stack, write_roots

_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}
TARGETS = "/tuf/image/targets/"


# ----- a small real disk -----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk-{len(mounted)}"
        where.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root; the disk drills run as root in CI")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Take all but ``leave`` free bytes of ``path``'s filesystem."""
    filler = path / f"filler-{len(list(path.glob('filler-*')))}"
    want = max(0, free(path) - leave)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if want:
            try:
                os.posix_fallocate(fd, 0, want)
            except OSError:
                pass
        if leave == 0:  # take what rounding left too
            os.lseek(fd, 0, os.SEEK_END)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def unfill(path: Path) -> None:
    for filler in path.glob("filler-*"):
        filler.unlink()


# ----- a real HTTP hop that can hold a download ------------------------------------------


class HoldProxy:
    def __init__(self, upstream: str):
        self.client = httpx.Client(base_url=upstream.rstrip("/"), timeout=30.0, follow_redirects=False)
        self.lock = threading.Lock()
        self.target_bytes = 0  # body bytes of image targets written to agents
        self.target_ranges: list[str | None] = []
        self._hold_at: int | None = None
        self.holding = threading.Event()
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                resp = proxy.client.request(self.command, self.path, headers=headers, content=body)
                data = resp.content
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in _HOP and k.lower() != "content-encoding":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if TARGETS not in self.path or self.command != "GET":
                    self.wfile.write(data)
                    return
                rng = self.headers.get("Range")
                with proxy.lock:
                    proxy.target_ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng and resp.status_code == 206 else 0
                sent = 0
                while sent < len(data):
                    n = min(64 * 1024, len(data) - sent)
                    hold = proxy._hold_at
                    if hold is not None and start + sent < hold <= start + sent + n:
                        n = hold - start - sent
                    if n:
                        self.wfile.write(data[sent:sent + n])
                        self.wfile.flush()
                        sent += n
                        with proxy.lock:
                            proxy.target_bytes += n
                    if hold is not None and start + sent == hold:
                        proxy.holding.set()
                        proxy._release.wait(30)
                        proxy._hold_at = None

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="hold-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def hold(self, offset: int) -> None:
        self.holding.clear()
        self._release.clear()
        self._hold_at = offset

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


@pytest.fixture
def proxy(stack: Stack) -> Iterator[HoldProxy]:
    p = HoldProxy(stack.url)
    yield p
    p.stop()


# ----- padded models ------------------------------------------------------------------


def padded_model(model: TrainedModel, out: Path, *, size: int, version: str) -> TrainedModel:
    """``model`` with ``size`` bytes of doc string in its ONNX file, as ``version``."""
    import onnx

    proto = onnx.load(str(model.path))
    proto.doc_string = os.urandom(size // 2).hex()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    return replace(model, path=out, manifest=model.manifest.model_copy(update={"version": version}))


# ----- agents on the small disk ---------------------------------------------------------


@pytest.fixture
def disk_agents(tmp_path: Path, small_disk: Callable[[str], Path]) -> Iterator[Callable[..., RunningAgent]]:
    """Factory: ``disk_agents(stack, "cam-1", data_dir, controller_url=proxy.url)``; agents stop
    before the small disk is unmounted. ``creds`` reuses an enrolment (restart)."""
    from edgefleet.edge_agent.config import AgentConfig
    from edgefleet.edge_agent.daemon import Agent

    running: list[RunningAgent] = []

    def make(stack: Stack, device_id: str, data_dir: Path, *, controller_url: str | None = None,
             creds: dict[str, Any] | None = None, capture: dict[str, Any] | None = None) -> RunningAgent:
        creds = creds or stack.client.enrol_device(device_id, "cpu-x86_64", {"test": "yes"})
        cfg = AgentConfig.model_validate({
            "agent": {"device_id": device_id, "data_dir": str(data_dir), "controller_url": controller_url or stack.url,
                      "token": creds["token"], "health_window_s": 1.0,
                      "trust_roots": str(write_roots(stack, tmp_path / "roots"))},
            "mqtt": {"host": stack.broker.host, "port": stack.broker.port, "username": device_id,
                     "password": creds["mqtt_password"], "protocol": "3.1.1"},
            "source": {"kind": "synthetic-digits", "fps": 30.0, "seed": 1},
            "capture": capture or {"enabled": False},
            "output": {"socket": ""},
        })
        ra = RunningAgent(Agent(cfg)).start()
        ra.creds = creds  # type: ignore[attr-defined]
        running.append(ra)
        return ra

    yield make
    for ra in running:
        ra.stop()
