"""Ingest throughput: telemetry applied per second by the controller ÷ a bare paho consumer.

All real, all on loopback: mosquitto (MQTT 5, credentials and ACL), the controller as its
own process (``fleet cloud serve``, SQLite or PostgreSQL), signed telemetry from
``--devices`` enrolled devices (each with its report key; one message per device per run,
so two replicas sharing the stream never see one device's messages out of order). Every
consumer is measured the same way, as a *drain*: its persistent MQTT 5 session exists, it
is away (the controllers SIGKILLed, so their sessions stay), a publisher (the controller's
own broker account, allowed to write device topics) queues one stream at QoS 1, and the
consumer comes back and takes it all:

* ``bare``: a paho client on ``fleet/v1/devices/+/telemetry`` (QoS 1, Receive Maximum 64 as
  the controller's, it only counts): messages per second from its first to its last
  arrival — the ceiling the broker and paho give this stream;
* ``bare + Ed25519 check``: the same consumer also parses each message and checks its
  signature (canonical bytes, ``report_sig.verify``: libsodium) in its callback: what is left
  of that ceiling for any controller that verifies every report on one Python thread, before
  it stores anything; then the same with OpenSSL's check (``report_sig.verify_openssl``);
* ``controller --batch 1``: the controller as it was (one transaction per message);
* ``controller --batch N``: group commit (``ingest_batch_max``, default 256); with
  ``--receive-maximum 64,512`` once per ``mqtt_receive_maximum`` value (the QoS 1 messages the
  broker may have in flight to the controller, unacknowledged until their batch commits);
* with ``--replicas`` (PostgreSQL only): two controller processes on one database sharing the
  subscription (``$share/controllers/...``) against one, same batch setting.

A controller's rate is telemetry rows committed per second (first to last, polled in the
database); its CPU per message is the processes' user+system time over the same span ÷
messages. Printed: absolute rates, ratios against the bare consumer (goal >= 0.5), batch vs
one-per-transaction rate and CPU, and two replicas ÷ one.

    python bench/bench_ingest_throughput.py [--devices 1000] [--receive-maximum 64,512]
        [--postgres | --database-url URL] [--replicas]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from sqlalchemy import text  # noqa: E402
from tests.signed_reports.keys import SimKey  # noqa: E402

from edgefleet.cloud.broker import MosquittoBroker, free_port  # noqa: E402
from edgefleet.cloud.db import make_engine  # noqa: E402
from edgefleet.cloud.devices import fleet, identity, report_verify  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402
from edgefleet.cloud.tables import ModelVersion  # noqa: E402
from edgefleet.protocols import Channel, LatencyStats, ModelRef, ShadowStats, Telemetry, fast_json  # noqa: E402
from edgefleet.protocols.canonical import canonical_bytes  # noqa: E402
from edgefleet.protocols.topics import device_topic  # noqa: E402
from edgefleet.registry import report_sig  # noqa: E402

CONTROL = ModelRef(name="digits", version="1.0", digest="a" * 64)
CANDIDATE = ModelRef(name="digits", version="2.0", digest="b" * 64)
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)


class Stream:
    """Signed telemetry, one period per device per run (fresh seq, the next period)."""

    def __init__(self, device_ids: list[str]):
        self.keys = {d: SimKey(d) for d in device_ids}
        self.run = 0

    def next(self) -> list[tuple[str, bytes]]:
        self.run += 1
        start = T0 + timedelta(seconds=10 * self.run)
        out = []
        for device_id, key in self.keys.items():
            msg = Telemetry(device_id=device_id, period_start=start, period_end=start + timedelta(seconds=10),
                            control=CONTROL, frames=100, fps=10.0, latency_ms=LatencyStats(p50=1.0, p99=2.5),
                            class_counts={"3": 40, "8": 60}, confidence_histogram=[0, 1, 5, 20, 74],
                            shadow=ShadowStats(candidate=CANDIDATE, frames=50, disagreements=3, agreement=0.94,
                                               latency_ms=LatencyStats(p99=3.0)))
            out.append((device_topic(device_id, Channel.TELEMETRY), key.sign(msg)))
        return out


def _client(client_id: str, port: int, auth: tuple[str, str], **kw: Any) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kw)
    c.username_pw_set(*auth)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    return c


def publish(port: int, auth: tuple[str, str], stream: list[tuple[str, bytes]]) -> float:
    """Publish the stream at QoS 1 (waiting for every PUBACK); returns seconds taken."""
    pub = _client(f"bench-pub-{time.time_ns()}", port, auth)
    done = threading.Semaphore(0)
    pub.on_publish = lambda *_a: done.release()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    started = time.perf_counter()
    for topic, payload in stream:
        pub.publish(topic, payload, qos=1)
    for _ in stream:
        done.acquire(timeout=30)
    took = time.perf_counter() - started
    pub.loop_stop()
    pub.disconnect()
    return took


def bare_rate(port: int, auth: tuple[str, str], stream: list[tuple[str, bytes]],
              keys: dict[str, str] | None = None, check: Any = report_sig.verify) -> float:
    """Messages/s a paho consumer that does nothing but count drains this stream at, queued
    for it by the broker while it was away (persistent session, like the controller's).
    With ``keys`` (device id → report public key) it also checks each message's Ed25519
    signature as the controller must (parse, canonical bytes, ``check``: libsodium, or OpenSSL
    with ``report_sig.verify_openssl``) and counts only the good ones: the ceiling of any
    controller that verifies every report on one Python thread."""
    arrivals: list[float] = []
    client_id = f"bench-bare-{time.time_ns()}"

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if keys is not None:
            obj = fast_json.loads(message.payload)
            if not check(keys[obj["device_id"]], canonical_bytes(obj), obj["sig"]):
                return
        arrivals.append(time.perf_counter())

    def connect() -> mqtt.Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        props.ReceiveMaximum = 64  # as the controller's default mqtt_receive_maximum
        c = _client(client_id, port, auth)
        c.on_message = on_message
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
        c.loop_start()
        return c

    sub = connect()
    ready = threading.Event()
    sub.on_subscribe = lambda *_a: ready.set()
    sub.subscribe("fleet/v1/devices/+/telemetry", qos=1)
    ready.wait(10)
    sub.loop_stop()
    sub.disconnect()
    publish(port, auth, stream)  # queued for the absent session
    sub = connect()
    deadline = time.monotonic() + 60
    while len(arrivals) < len(stream) and time.monotonic() < deadline:
        time.sleep(0.01)
    sub.loop_stop()
    sub.disconnect()
    return (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-9)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quiet(procs: list[subprocess.Popen[bytes]], timeout: float = 90.0) -> None:
    """Wait until the processes use under 10 % of a core over two half-second windows."""
    calm, deadline = 0, time.monotonic() + timeout
    while calm < 2 and time.monotonic() < deadline:
        before = sum(_cpu_s(p.pid) for p in procs)
        time.sleep(0.5)
        calm = calm + 1 if sum(_cpu_s(p.pid) for p in procs) - before < 0.05 * len(procs) else 0


def start_controllers(data_dir: Path, n: int, log: Path, *, connected: bool = False) -> list[subprocess.Popen[bytes]]:
    """``n`` controller processes (replica ids r0, r1 …, their own HTTP ports); with
    ``connected``, return once each one's bridge is connected (its session and subscriptions made)."""
    procs, ports = [], []
    for i in range(n):
        ports.append(free_port())
        env = {**os.environ, "EDGEFLEET_REPLICA_ID": f"r{i}", "EDGEFLEET_HTTP_PORT": str(ports[-1])}
        procs.append(subprocess.Popen([str(Path(sys.executable).with_name("fleet")), "cloud", "serve",
                                       "--data-dir", str(data_dir), "--log-level", "WARNING"],
                                      stdout=subprocess.DEVNULL, stderr=log.open("ab"), env=env))
    for proc, port in zip(procs, ports if connected else []):
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"a controller did not come up; see {log}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).json().get("mqtt_connected"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
    return procs


def kill(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL: no clean stop, so every replica's broker session stays (and queues for it)."""
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=20)


def controller_rate(data_dir: Path, db_url: str, port: int, auth: tuple[str, str], stream: list[tuple[str, bytes]],
                    replicas: int, log: Path) -> tuple[float, float, int]:
    """Drain rate of the controller(s): (telemetry rows committed per second, controller CPU ms
    per message, rows). The replicas first run until idle (sessions and subscriptions made,
    desired state published), are killed, the stream is queued for them, and they start again."""
    engine = make_engine(db_url)

    def rows() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM telemetry_period")).scalar_one())

    procs = start_controllers(data_dir, replicas, log, connected=True)
    try:
        time.sleep(1.0)  # SUBACKs
        _quiet(procs)
        kill(procs)
        publish(port, auth, stream)
        before = rows()
        procs = start_controllers(data_dir, replicas, log)
        first = last = None
        seen, cpu_first, cpu_last = before, 0.0, 0.0
        deadline = time.monotonic() + 180
        while seen - before < len(stream) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a controller exited; see {log}:\n{log.read_text()[-3000:]}")
            now_rows = rows()
            t = time.perf_counter()
            if now_rows > seen:
                cpu = sum(_cpu_s(p.pid) for p in procs)
                if first is None:
                    first, cpu_first = t, cpu
                seen, last, cpu_last = now_rows, t, cpu
            elif last is not None and t - last > 10:
                break  # stalled
            time.sleep(0.005)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.dispose()
    applied = seen - before
    if first is None or last is None or last <= first:
        return 0.0, float("nan"), applied
    return (applied - 1) / (last - first), (cpu_last - cpu_first) * 1000 / max(applied - 1, 1), applied


def write_config(data_dir: Path, broker: MosquittoBroker, db_url: str | None, batch: int,
                 receive_maximum: int | None = None) -> None:
    lines = ["[controller]", f"mqtt_port = {broker.port}", 'mqtt_protocol = "5"',
             f'broker_auth_dir = "{broker.auth_dir}"', "reconcile_interval_s = 2.0",
             f"ingest_batch_max = {batch}", "telemetry_period_s = 10.0"]
    if receive_maximum is not None:
        lines.append(f"mqtt_receive_maximum = {receive_maximum}")
    if db_url:
        lines.append(f'database_url = "{db_url}"')
    (data_dir / "controller.toml").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000, help="enrolled devices; one message each per run")
    ap.add_argument("--batch", type=int, default=256, help="ingest_batch_max of the batched runs")
    ap.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server (initdb/pg_ctl on PATH)")
    ap.add_argument("--database-url", help="an existing PostgreSQL database (emptied!) instead of SQLite")
    ap.add_argument("--replicas", action="store_true", help="also two controller replicas on one PostgreSQL")
    ap.add_argument("--receive-maximum", type=lambda v: [int(x) for x in v.split(",")],
                    help="batched runs with these mqtt_receive_maximum values, e.g. 64,512 (default: the setting's)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (controller logs) for a look")
    args = ap.parse_args()
    if not MosquittoBroker.available():
        raise SystemExit("mosquitto is not installed: this benchmark needs it (MQTT 5, shared subscriptions)")
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-bench-ingest-"))
    pg = None
    db_url = args.database_url
    if args.postgres:
        from tests.outage.conftest import PgServer

        pg = PgServer()
        pg.start()
        db_url = pg.url
    if args.replicas and not db_url:
        raise SystemExit("--replicas needs PostgreSQL (--postgres or --database-url)")
    broker = MosquittoBroker(data_dir=tmp / "mosquitto", auth_dir=tmp / "broker-auth")
    broker.start()
    data_dir = tmp / "controller"
    data_dir.mkdir(mode=0o700)
    log = tmp / "controllers.log"
    try:
        write_config(data_dir, broker, db_url, args.batch)
        setup = Controller(load_settings(data_dir, env={}))
        setup.trust  # noqa: B018 - keys and TUF metadata made here, never by a process the bench kills
        setup.migrate()
        ids = [f"bench-{i:05d}" for i in range(args.devices)]
        stream = Stream(ids)
        with setup.session() as s:
            for d in ids:
                device = fleet.get_device(s, fleet.enrol(s, d, "cpu-x86_64").device_id)
                report_verify.set_key(device, stream.keys[d].public_key)
                device.reported_generation = device.desired_generation  # in step: nothing to re-send or sign
                s.add(device)
            for ref in (CONTROL, CANDIDATE):  # catalog models: the label book finds (and caches) their manifests
                s.add(ModelVersion(name=ref.name, version=ref.version, digest=ref.digest, size=1,
                                   manifest={"labels": [str(i) for i in range(10)]}))
            s.commit()
        setup.republish_all()  # director metadata signed here: the controllers' first start only re-sends it
        setup.sync_broker_auth()
        broker.reload()
        account = identity.controller_account(data_dir, None, None)
        auth = (account.username, account.password)
        setup.engine.dispose()
        url = db_url or f"sqlite:///{data_dir / 'controller.db'}"
        kind = "PostgreSQL" if db_url else "SQLite (WAL)"
        print(f"{args.devices} devices, one signed telemetry each per run; mosquitto MQTT 5; {kind}")

        bare = bare_rate(broker.port, auth, stream.next())
        print(f"  bare paho consumer          {bare:9.0f} msg/s")
        public = {d: k.public_key for d, k in stream.keys.items()}
        checked = bare_rate(broker.port, auth, stream.next(), public)
        print(f"  bare + Ed25519 check        {checked:9.0f} msg/s  ratio to bare {checked / bare:.2f} "
              "(libsodium: the ceiling of a controller that verifies on one Python thread)")
        openssl = bare_rate(broker.port, auth, stream.next(), public, report_sig.verify_openssl)
        print(f"  bare + check by OpenSSL     {openssl:9.0f} msg/s  ratio to bare {openssl / bare:.2f}")
        results = {}
        runs: list[tuple[str, int, int | None]] = [("controller --batch 1", 1, None)]
        runs += [(f"controller --batch {args.batch}" + (f" rm {rm}" if rm else ""), args.batch, rm)
                 for rm in args.receive_maximum or [None]]
        for label, batch, rm in runs:
            write_config(data_dir, broker, db_url, batch, rm)
            rate, cpu, n = controller_rate(data_dir, url, broker.port, auth, stream.next(), 1, log)
            results[label] = (rate, cpu)
            print(f"  {label:27s} {rate:9.0f} msg/s  {cpu:6.2f} ms CPU/msg  ({n} applied)  ratio to bare {rate / bare:.2f}")
        one, many = results[runs[0][0]], results[runs[1][0]]
        print(f"batched ÷ bare consumer: {many[0] / bare:.2f} (goal >= 0.5); "
              f"÷ the verifying consumer: {many[0] / checked:.2f}")
        print(f"batched ÷ one per transaction: {many[0] / max(one[0], 1e-9):.2f}x the rate, "
              f"{many[1] / one[1]:.2f}x the CPU per message")
        for label, _batch, _rm in runs[2:]:
            print(f"{label} ÷ {runs[1][0]}: {results[label][0] / max(many[0], 1e-9):.2f}x the rate, "
                  f"{results[label][1] / many[1]:.2f}x the CPU per message")
        if args.replicas:
            write_config(data_dir, broker, db_url, args.batch)
            rate2, cpu2, n2 = controller_rate(data_dir, url, broker.port, auth, stream.next(), 2, log)
            print(f"  2 replicas, --batch {args.batch:<6d} {rate2:9.0f} msg/s  {cpu2:6.2f} ms CPU/msg  ({n2} applied)")
            print(f"2 replicas ÷ 1 replica: {rate2 / max(many[0], 1e-9):.2f}")
    finally:
        broker.stop()
        if pg is not None:
            pg.destroy()
        if args.keep:
            print(f"kept {tmp} (controllers.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
