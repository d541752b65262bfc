"""The control model's output, delivered to applications on the device at once.

Two ways in, both fed from the control path right after inference:

* **in-process callbacks**: ``AppOutput.add_callback(fn)``; ``fn(prediction_record)`` runs
  on the control thread, so it must be quick (hand work to your own thread).
* **a loopback socket** (``PredictionServer``): a UNIX socket (``unix:/run/edgefleet/
  predictions.sock``, the default is ``predictions.sock`` in the agent's data dir) or a TCP
  port on a loopback address (``tcp:127.0.0.1:7070``). Every connected client receives one
  JSON object per line (schema ``fleet.prediction/1``)::

      {"schema": "fleet.prediction/1", "device_id": "cam-1", "seq": 42, "ts": 1732412345.12,
       "model": "digits:1.0", "digest": "…", "label": "8", "score": 0.97,
       "scores": [...], "boxes": [[x1, y1, x2, y2, score, label], ...], "latency_ms": 0.4}

  The application may write back on the same connection, one JSON object per line, the
  context of the frames it sees from now on (what a campaign condition's ``context.KEY``
  reads; stored with captures)::

      {"schema": "fleet.context/1", "context": {"steering_deg": -25, "speed_kmh": 12}}

  A line that is not such an object (or breaks the bounds: 32 keys, 4 KiB a line) is
  counted in ``context_refused`` and ignored; the connection stays.

  Why a local socket and not an MQTT topic: predictions must reach the application when
  the link to the broker is down, at camera rate, without crossing the network; a
  loopback socket needs no broker and costs nothing when nobody listens.

The control path never waits for a reader: each client has a bounded queue and its own
writer thread; when a client falls behind, its oldest-unsent records are dropped and
counted (``dropped``), and a client that cannot be written to is disconnected. With no
client connected, ``publish`` does nothing beyond the callbacks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..protocols import ModelRef
from ..shadow import Prediction
from .errors import ConfigError
from .local_address import LocalAddress, parse_local_address

log = logging.getLogger(__name__)

SCHEMA = "fleet.prediction/1"
CONTEXT_SCHEMA = "fleet.context/1"
MAX_CONTEXT_LINE = 4096
ContextSink = Callable[[Any], object]  # raises ValueError on a context it refuses
MAX_SCORES = 100
Callback = Callable[[dict[str, Any]], None]


Address = LocalAddress  # unix:PATH or tcp:HOST:PORT


def parse_address(spec: str, base_dir: Path | None = None) -> Address | None:
    """``unix:PATH`` (relative to ``base_dir``), ``tcp:HOST:PORT`` (loopback only) or ``""`` (off).

    Raises:
        ConfigError: another scheme, or a TCP host that is not a loopback address.
    """
    return parse_local_address(spec, base_dir, scheme="tcp", what="output socket", example_port=7070)


def prediction_record(device_id: str, seq: int, ts: float, prediction: Prediction, model: ModelRef,
                      latency_ms: float | None = None) -> dict[str, Any]:
    """The JSON-ready record of one control prediction."""
    record: dict[str, Any] = {
        "schema": SCHEMA, "device_id": device_id, "seq": seq, "ts": ts, "model": model.label,
        "digest": model.digest, "label": prediction.label, "score": prediction.score,
    }
    if prediction.probs is not None:
        record["scores"] = [round(float(p), 5) for p in prediction.probs[:MAX_SCORES]]
    if prediction.boxes:
        record["boxes"] = [[b.x1, b.y1, b.x2, b.y2, b.score, b.label] for b in prediction.boxes[:MAX_SCORES]]
    if prediction.values is not None:
        record["values"] = [float(v) for v in prediction.values[:MAX_SCORES]]
    if latency_ms is not None:
        record["latency_ms"] = round(latency_ms, 3)
    return record


class _Client:
    def __init__(self, conn: socket.socket, depth: int, on_close: Callable[[_Client], None],
                 on_context: ContextSink | None = None):
        self.conn = conn
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue(depth)
        self.dropped = 0
        self.context_refused = 0
        self._on_close = on_close
        self._on_context = on_context
        self.thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self.reader = threading.Thread(target=self._read, name="context-reader", daemon=True)

    def _read(self) -> None:
        """Context lines from the application (edge_agent/campaigns.py keeps the latest)."""
        buf = b""
        try:
            while True:
                chunk = self.conn.recv(8192)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._context_line(line)
                if len(buf) > MAX_CONTEXT_LINE:
                    self.context_refused += 1
                    buf = b""
        except OSError:
            return

    def _context_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            if len(line) > MAX_CONTEXT_LINE:
                raise ValueError("line too long")
            obj = json.loads(line)
            if not isinstance(obj, dict) or obj.get("schema") != CONTEXT_SCHEMA:
                raise ValueError(f"not a {CONTEXT_SCHEMA} object")
            if self._on_context is not None:
                self._on_context(obj.get("context"))
        except (ValueError, RecursionError) as exc:
            self.context_refused += 1
            log.debug("context line refused: %s", exc)

    def offer(self, record: dict[str, Any]) -> None:
        try:
            self.q.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            with contextlib.suppress(queue.Empty):
                self.q.get_nowait()  # keep the newest: drop the oldest unsent
            with contextlib.suppress(queue.Full):
                self.q.put_nowait(record)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self.q.put_nowait(None)

    def _run(self) -> None:
        try:
            while True:
                record = self.q.get()
                if record is None:
                    return
                self.conn.sendall(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        except OSError:
            pass  # the reader went away
        finally:
            with contextlib.suppress(OSError):
                self.conn.close()
            self._on_close(self)


class PredictionServer:
    """Streams prediction records to local readers (newline-delimited JSON)."""

    def __init__(self, address: Address, *, client_queue: int = 64, max_clients: int = 16):
        self.address = address
        self.on_context: ContextSink | None = None  # context lines from applications go here
        self.client_queue = client_queue
        self.max_clients = max_clients
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.dropped_total = 0

    @property
    def has_clients(self) -> bool:
        return bool(self._clients)

    def start(self) -> None:
        a = self.address
        if a.kind == "unix":
            assert a.path is not None
            a.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                a.path.unlink()  # a stale socket of a previous run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(a.path))
            os.chmod(a.path, 0o660)
        else:
            family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((a.host, a.port))
            if a.port == 0:
                self.address = Address("tcp", host=a.host, port=sock.getsockname()[1])
        sock.listen(self.max_clients)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="prediction-server", daemon=True)
        self._thread.start()
        log.info("predictions for local applications on %s", self.address)

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            c.close()
        if self.address.kind == "unix" and self.address.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.address.path.unlink()

    def publish(self, record: dict[str, Any]) -> None:
        """Offer one record to every client; never blocks."""
        for c in self._clients:
            c.offer(record)

    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if len(self._clients) >= self.max_clients:
                    conn.close()
                    continue
                client = _Client(conn, self.client_queue, self._forget, self.on_context)
                self._clients = [*self._clients, client]
            client.thread.start()
            client.reader.start()

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self.dropped_total += client.dropped
            self._clients = [c for c in self._clients if c is not client]


class AppOutput:
    """The pipeline's output callback: callbacks plus an optional ``PredictionServer``."""

    def __init__(self, device_id: str, server: PredictionServer | None = None):
        self.device_id = device_id
        self.server = server
        self.callbacks: list[Callback] = []
        self.seq = 0
        self.errors = 0

    def add_callback(self, fn: Callback) -> None:
        self.callbacks.append(fn)

    def start(self) -> None:
        if self.server is not None:
            self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __call__(self, ts: float, _frame: object, prediction: Prediction, model: ModelRef,
                 latency_ms: float | None = None) -> None:
        """Called on the control path for every frame."""
        self.seq += 1
        if not self.callbacks and not (self.server and self.server.has_clients):
            return
        record = prediction_record(self.device_id, self.seq, ts, prediction, model, latency_ms)
        for fn in self.callbacks:
            try:
                fn(record)
            except Exception:
                self.errors += 1
                log.exception("application callback failed")
        if self.server is not None:
            self.server.publish(record)


def context_line(context: dict[str, Any]) -> bytes:
    """For applications: the line that attaches ``context`` to the frames from now on."""
    return json.dumps({"schema": CONTEXT_SCHEMA, "context": context}, separators=(",", ":")).encode() + b"\n"


def read_predictions(address: str | Address, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """For applications: connect to the agent's socket and yield prediction records."""
    a = address if isinstance(address, Address) else parse_address(address)
    if a is None:
        raise ConfigError("no output socket configured")
    if a.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = str(a.path)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
        target = (a.host, a.port)
    sock.settimeout(timeout)
    sock.connect(target)
    buf = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield json.loads(line)
    finally:
        sock.close()
