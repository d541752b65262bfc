"""Real pieces for the network-policy tests: a Range-capable HTTP server on loopback that can
drop a connection part-way, a link hook whose answer the test flips, and real agents with
a ``[network]`` section."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ..conftest import RunningAgent, Stack, write_roots


class RangeServer:
    """Serves ``data`` at ``/blob`` with ``Range: bytes=N-`` support; counts bytes sent and the
    Range headers seen. ``drop_after``: the first response is cut after that many bytes."""

    def __init__(self, data: bytes, *, drop_after: int | None = None, write_size: int = 16 * 1024):
        self.data = data
        self.drop_after = drop_after
        self.ranges: list[str | None] = []
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = 0
                m = re.match(r"^bytes=(\d+)-$", rng or "")
                if m:
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.data) - 1}/{len(outer.data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(outer.data) - start))
                self.end_headers()
                limit = len(outer.data)
                if outer.drop_after is not None and len(outer.ranges) == 1:
                    limit = min(limit, start + outer.drop_after)
                pos = start
                try:
                    while pos < limit:
                        chunk = outer.data[pos:min(limit, pos + write_size)]
                        self.wfile.write(chunk)
                        outer.sent += len(chunk)
                        pos += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if pos < len(outer.data):
                    self.close_connection = True
                    self.connection.shutdown(2)  # the link drops mid-body

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/blob"
        self.sha256 = hashlib.sha256(data).hexdigest()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def range_server() -> Iterator[Callable[..., RangeServer]]:
    made: list[RangeServer] = []

    def make(data: bytes, **kw: Any) -> RangeServer:
        s = RangeServer(data, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


class LinkHook:
    """``[network] link_command`` for a test: prints what ``set()`` last wrote."""

    def __init__(self, directory: Path, kind: str = "metered", interface: str = "wwan0"):
        self.file = directory / "link-kind"
        self.set(kind, interface)
        self.command = f"cat {self.file}"

    def set(self, kind: str, interface: str = "wwan0") -> None:
        self.file.write_text(f"{kind} {interface}\n")


@pytest.fixture
def link_hook(tmp_path: Path) -> LinkHook:
    return LinkHook(tmp_path)


@pytest.fixture
def network_agents(tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    """Factory: ``network_agents(stack, "cam-1", network={...})`` enrols and runs a real agent."""
    from edgefleet.edge_agent.config import AgentConfig
    from edgefleet.edge_agent.daemon import Agent

    running: list[RunningAgent] = []

    def make(stack: Stack, device_id: str, *, network: dict[str, Any], capture: dict[str, Any] | None = None) -> RunningAgent:
        creds = stack.client.enrol_device(device_id, "cpu-x86_64", {"test": "yes"})
        cfg = AgentConfig.model_validate({
            "agent": {"device_id": device_id, "data_dir": str(tmp_path / "agents" / device_id),
                      "controller_url": stack.url, "token": creds["token"], "health_window_s": 1.0,
                      "trust_roots": str(write_roots(stack, tmp_path / "roots"))},
            "mqtt": {"host": stack.broker.host, "port": stack.broker.port, "username": device_id,
                     "password": creds["mqtt_password"],
                     "protocol": "5" if getattr(stack.broker, "kind", "") == "mosquitto" else "3.1.1"},
            "source": {"kind": "synthetic-digits", "fps": 30.0, "seed": 1},
            "network": network,
            **({"capture": capture} if capture else {}),
        })
        ra = RunningAgent(Agent(cfg)).start()
        running.append(ra)
        return ra

    yield make
    for ra in running:
        ra.stop()
