"""A controller and a broker for simulated fleets (``edgefleet.sim``), for the scale benchmarks
and the simulator's protocol test — all on loopback, all real.

* ``SimBroker``: mosquitto with two listeners (``per_listener_settings true``). The first
  is the product's: the password file and ACL the controller writes from its device table.
  The second is for the simulator only: one bench account (``edgefleet-sim``, a random
  password) that may publish ``reported|telemetry|events|status`` under any device id and
  subscribe to any device's ``desired`` — the rights of many devices at once, never the
  controller's (it cannot publish ``desired``). It exists because a simulator multiplexes
  many devices per connection; real devices log in with their own accounts on the first.
* ``enrol(controller, devices)``: devices and their report keys straight into the database,
  in batches (one multi-row INSERT per batch): the keys ``edgefleet.sim`` signs with.
* ``IngestProbe``: wraps the controller's ``reported``/``telemetry`` handlers (before it
  starts) and records, per applied message, how long after its signed ``device_time`` it
  was applied; a measurement hook, the handlers themselves are unchanged.
* ``postgres_url()``: ``DATABASE_URL`` if it names PostgreSQL, else a throwaway cluster
  (initdb + pg_ctl on a free port, as the tests start one).
* ``sim_stack(...)``: broker, controller (SQLite or PostgreSQL), HTTP API, admin client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

from edgefleet.cloud.broker import MosquittoBroker, free_port, wait_for_port
from edgefleet.cloud.broker_auth import ACL_FILE, PASSWD_FILE, hash_password, new_password
from edgefleet.sim import DEFAULT_SEED, public_key

SIM_ACCOUNT = "edgefleet-sim"


class SimBroker(MosquittoBroker):
    """mosquitto: the controller's listener (``port``) and the simulator's (``sim_port``)."""

    def __init__(self, *, data_dir: Path, auth_dir: Path, max_queued_messages: int = 1_000_000):
        super().__init__(data_dir=data_dir, auth_dir=auth_dir)
        self.sim_port = free_port(self.host)
        self.sim_auth = (SIM_ACCOUNT, new_password())
        self.max_queued_messages = max_queued_messages
        self.sim_dir = Path(data_dir) / "sim-auth"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.sim_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.sim_dir, 0o700)
        user, password = self.sim_auth
        (self.sim_dir / PASSWD_FILE).write_text(f"{user}:{hash_password(password)}\n")
        base = "fleet/v1/devices/+"
        (self.sim_dir / ACL_FILE).write_text("\n".join(
            [f"user {user}", *(f"topic write {base}/{c}" for c in ("reported", "telemetry", "events", "status")),
             f"topic read {base}/desired"]) + "\n")
        for name in (PASSWD_FILE, ACL_FILE):
            os.chmod(self.sim_dir / name, 0o600)
        lines = [
            "per_listener_settings true",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "log_dest stderr", "log_type error", "log_type warning",
            f"max_queued_messages {self.max_queued_messages}",
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"password_file {self.auth_dir / PASSWD_FILE}",
            f"acl_file {self.auth_dir / ACL_FILE}",
            f"listener {self.sim_port} {self.host}",
            "allow_anonymous false",
            f"password_file {self.sim_dir / PASSWD_FILE}",
            f"acl_file {self.sim_dir / ACL_FILE}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        super().start()
        wait_for_port(self.host, self.sim_port)

    def restart(self) -> None:
        """Stop (SIGTERM: mosquitto saves its retained messages) and start again on the same ports."""
        self.stop()
        super().start()
        wait_for_port(self.host, self.sim_port)


def enrol(controller: Any, devices: list[tuple[str, str]], *, seed: str = DEFAULT_SEED, batch: int = 5000,
          tags: dict[str, str] | None = None) -> float:
    """Enrol ``devices`` with the report keys ``edgefleet.sim`` signs with; returns the seconds taken."""
    from sqlalchemy import insert

    from edgefleet.cloud.tables import Device
    from edgefleet.registry import report_sig

    t0 = time.perf_counter()
    table = Device.__table__  # type: ignore[attr-defined]
    with controller.engine.begin() as conn:
        for k in range(0, len(devices), batch):
            rows = []
            for device_id, hw in devices[k:k + batch]:
                pub = public_key(device_id, seed)
                rows.append(Device(id=device_id, hardware_id=hw, tags=dict(tags or {"site": "bench"}),
                                   report_public_key=pub, report_key_id=report_sig.key_id(pub)).model_dump())
            conn.execute(insert(table), rows)
    return time.perf_counter() - t0


def _kind_of(msg: Any) -> str | None:
    from edgefleet.protocols import Reported, Telemetry

    return "reported" if isinstance(msg, Reported) else "telemetry" if isinstance(msg, Telemetry) else None


@dataclass
class IngestProbe:
    """Lag (seconds from the device's signed ``device_time`` to applied) of each applied message."""

    lags: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {"reported": [], "telemetry": []})
    refused: dict[str, int] = field(default_factory=lambda: {"reported": 0, "telemetry": 0})
    # CPU of the handling thread inside the handlers (applied and refused): the cost per
    # message, much less sensitive to a busy machine than wall time
    cpu_s: dict[str, float] = field(default_factory=lambda: {"reported": 0.0, "telemetry": 0.0})
    # per device, the control slot (installed digest, phase) of its last applied report: what
    # the controller has taken in, as against what the simulator says it sent
    control: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def applied_healthy_on(self, digest: str) -> int:
        """Devices whose last report the controller applied says ``digest`` is healthy in control."""
        with self._lock:
            return sum(1 for d, p in self.control.values() if d == digest and p == "healthy")

    def install(self, controller: Any) -> None:
        """Before ``controller.start()``: the per-message handlers and the batch handler the
        bridge is given (batched ingest applies most messages through the latter)."""
        for kind in ("reported", "telemetry"):
            original = getattr(controller, f"_on_{kind}")
            setattr(controller, f"_on_{kind}", self._wrap(kind, original))
        if hasattr(controller, "_on_batch"):
            controller._on_batch = self._wrap_batch(controller._on_batch)

    def _wrap_batch(self, handler: Callable[[list[Any]], list[Any]]) -> Callable[[list[Any]], list[Any]]:
        def wrapped(msgs: list[Any]) -> list[Any]:
            cpu0 = time.thread_time()
            results = handler(msgs)
            cpu = time.thread_time() - cpu0
            now = time.time()
            kinds = [_kind_of(m) for m in msgs]
            counted = [k for k in kinds if k is not None]
            with self._lock:
                for msg, kind, result in zip(msgs, kinds, results):
                    if kind is None:
                        continue
                    self.cpu_s[kind] += cpu / len(counted)  # the batch's CPU, shared per message
                    if result is not None:
                        self.refused[kind] += 1
                        continue
                    if kind == "reported" and (slot := msg.slots.get("control")) is not None:
                        self.control[msg.device_id] = (slot.installed.digest if slot.installed else None,
                                                       getattr(slot.phase, "value", str(slot.phase)))
                    dt = msg.device_time
                    if dt is not None:
                        dt = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
                        self.lags[kind].append((now, now - dt.timestamp()))
            return results
        return wrapped

    def _wrap(self, kind: str, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def wrapped(msg: Any) -> None:
            cpu0 = time.thread_time()
            try:
                handler(msg)
            except Exception:
                with self._lock:
                    self.refused[kind] += 1
                raise
            finally:
                with self._lock:
                    self.cpu_s[kind] += time.thread_time() - cpu0
            now = time.time()
            dt = msg.device_time
            if dt is not None:
                dt = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
                with self._lock:
                    self.lags[kind].append((now, now - dt.timestamp()))
        return wrapped

    def cpu_ms_per_message(self, kind: str) -> float:
        with self._lock:
            n = len(self.lags[kind]) + self.refused[kind]
            return self.cpu_s[kind] / n * 1000 if n else float("nan")

    def window(self, kind: str, since: float, until: float | None = None) -> list[float]:
        """Lags of messages applied in [since, until) (wall clock)."""
        with self._lock:
            rows = list(self.lags[kind])
        return [lag for t, lag in rows if t >= since and (until is None or t < until)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    now = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


@contextmanager
def postgres_url() -> Iterator[str]:
    """``DATABASE_URL`` (PostgreSQL, its public schema emptied) or a throwaway cluster."""
    env_url = os.environ.get("DATABASE_URL", "")
    if env_url.startswith(("postgres://", "postgresql")):
        from sqlalchemy import text

        from edgefleet.cloud.db import make_engine

        engine = make_engine(env_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
        yield env_url
        return
    found = shutil.which("initdb")
    bindir = Path(found).parent if found else next(
        (p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True) if (p / "initdb").exists()), None)
    if bindir is None:
        raise SystemExit("PostgreSQL: no DATABASE_URL and no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="edgefleet-bench-pg-"))
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        root.chmod(0o777)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if run_as:
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    port = free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "edgefleet", "-A", "trust"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://edgefleet@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class SimStack:
    broker: SimBroker
    settings: Any
    controller: Any
    client: Any  # ApiClient with an admin token
    probe: IngestProbe
    enrol_s: float


@contextmanager
def sim_stack(tmp: Path, devices: list[tuple[str, str]], *, database_url: str | None = None, seed: str = DEFAULT_SEED,
              client_timeout: float = 120.0, **settings: Any) -> Iterator[SimStack]:
    """Broker, controller (``database_url`` or SQLite under ``tmp``) with ``devices`` enrolled,
    the HTTP API and an admin client; stopped in reverse order on exit."""
    from edgefleet.cloud.api import create_app
    from edgefleet.cloud.cli.cloud_cmd import create_admin_token
    from edgefleet.cloud.client import ApiClient
    from edgefleet.cloud.demo.orchestrator import UvicornThread
    from edgefleet.cloud.interpreter import tune_gc
    from edgefleet.cloud.runtime import Controller
    from edgefleet.cloud.settings import load_settings

    auth = tmp / "broker-auth"
    broker = SimBroker(data_dir=tmp / "mosquitto", auth_dir=auth)
    broker.start()
    controller = None
    http = client = None
    try:
        port = free_port()
        extra = {"database_url": database_url} if database_url else {}
        cfg = load_settings(tmp / "controller", env={}, http_port=port, mqtt_port=broker.port, mqtt_protocol="5",
                            broker_auth_dir=broker.auth_dir, **extra, **settings)
        controller = Controller(cfg)
        if controller.broker_auth is not None:
            controller.broker_auth.set_reload(broker.reload)
        controller.migrate()
        token = create_admin_token(controller)
        enrol_s = enrol(controller, devices, seed=seed)
        probe = IngestProbe()
        probe.install(controller)
        controller.start()
        http = UvicornThread(create_app(controller), cfg.http_host, port)
        http.start()
        tune_gc(cfg.gc_gen0_threshold)  # as fleet cloud serve does (0: Python's settings)
        client = ApiClient(cfg.base_url, token, timeout=client_timeout)
        yield SimStack(broker, cfg, controller, client, probe, enrol_s)
    finally:
        if http is not None:
            http.stop()
        if controller is not None:
            controller.stop()
        if client is not None:
            client.close()
        broker.stop()
