"""Benchmark: 100,000 enrolled simulated devices sending signed telemetry every 60 s (staggered):
does one controller keep up, on how much CPU and memory; and with ``--broker-restart``, how
long until every device has its desired state again after mosquitto restarts.

The controller (SQLite or PostgreSQL, MQTT bridge, reconciler, HTTP API) runs in this
process; the devices are ``edgefleet.sim`` in ``--processes`` child processes, many devices
per MQTT connection, each message the real protocol (per-device topics, schemas, Ed25519
signatures and seqs), on mosquitto; the simulator logs in on its own listener with a
bench-only account that has device rights for every id (``bench/sim_stack.py``). Devices
are enrolled in bulk, straight into the database.

Phases, each bounded in time:

1. enrol; start the controller (it publishes desired state for every device on connect);
   start the simulator; wait until every device's first signed ``reported`` is applied
   ("announce": time and rate);
2. steady state for ``--duration`` seconds: telemetry sent vs applied, ingest lag p50/p99
   (the device's signed ``device_time`` → the controller's handler returned), reported lag
   p99, the bridge's queue (max), QoS 0 drops, controller CPU in cores
   (``time.process_time`` ÷ wall), controller RSS;
3. ``--broker-restart``: restart mosquitto (SIGTERM, same ports, retained messages kept on
   disk), time until every device has received a desired hint again, and the telemetry
   ingest rate during that time vs steady state.

``--sim-only`` runs no controller: the simulator against mosquitto and one subscriber (an
account with the controller's rights) that counts telemetry and its delivery lag — what
the simulator and the broker carry on this machine, the ceiling for the controller runs.

    python bench/bench_fleet_100k.py                         # 100,000 devices, 180 s, SQLite
    python bench/bench_fleet_100k.py --devices 20000 --duration 120 --broker-restart
    python bench/bench_fleet_100k.py --db postgres            # DATABASE_URL or a throwaway cluster
    python bench/bench_fleet_100k.py --sim-only               # simulator + broker only
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgefleet.sim import SimProcesses, device_ids  # noqa: E402
from sim_stack import SimStack, percentile, postgres_url, rss_mib, sim_stack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--processes", type=int, default=0, help="simulator processes (default: one per 25,000 devices)")
    ap.add_argument("--connections", type=int, default=0,
                    help="MQTT connections per simulator process (default: one per 1,000 devices)")
    ap.add_argument("--telemetry-period", type=float, default=60.0)
    ap.add_argument("--duration", type=float, default=180.0, help="steady-state seconds measured")
    ap.add_argument("--announce-timeout", type=float, default=600.0,
                    help="seconds allowed until every device's first reported is applied")
    ap.add_argument("--broker-restart", action="store_true", help="then restart the broker and time the recovery")
    ap.add_argument("--restart-timeout", type=float, default=600.0)
    ap.add_argument("--sim-only", action="store_true", help="no controller: simulator and broker only")
    ap.add_argument("--python-gc", action="store_true", help="keep Python's garbage-collector settings "
                    "(the baseline of cloud/interpreter.py's tuning, which fleet cloud serve applies)")
    args = ap.parse_args()
    procs = args.processes or max(1, -(-args.devices // 25_000))
    conns = args.connections or max(1, -(-args.devices // (1000 * procs)))
    devices = device_ids(args.devices)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    print(f"# {args.devices} simulated devices in {procs} process(es) x {conns} connection(s), db {args.db}, "
          f"telemetry every {args.telemetry_period:.0f}s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    if args.sim_only:
        sim_only(args, tmp, devices, procs, conns)
        return
    t_ctl = time.perf_counter()
    with (postgres_url() if args.db == "postgres" else nullcontext(None)) as url, \
            sim_stack(tmp, devices, database_url=url, telemetry_period_s=args.telemetry_period,
                      client_timeout=900, gc_gen0_threshold=0 if args.python_gc else 20_000) as stack:
        print(f"# enrolled in {stack.enrol_s:.1f}s; controller started in {time.perf_counter() - t_ctl:.1f}s",
              flush=True)
        sim = SimProcesses(stack.broker.host, stack.broker.sim_port, devices, processes=procs,
                           auth=stack.broker.sim_auth, connections=conns, telemetry_period_s=args.telemetry_period,
                           goodbye=False)
        try:
            run(args, stack, sim)
        finally:
            sim.stop()


def _backlog(stack: SimStack) -> int:
    bridge = stack.controller.bridge
    return int(bridge.health()["backlog"]) if bridge is not None else 0


def _backlog_qos1(stack: SimStack) -> int:
    bridge = stack.controller.bridge
    return int(bridge.health()["backlog_qos1"]) if bridge is not None else 0


def _overflow(stack: SimStack) -> int:
    bridge = stack.controller.bridge
    return sum(v for (_ch, outcome), v in bridge.counters.items() if outcome == "overflow") if bridge else 0


def run(args: argparse.Namespace, stack: SimStack, sim: SimProcesses) -> None:
    n, probe = args.devices, stack.probe
    rows: list[tuple[str, str]] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    sim.start(timeout=args.announce_timeout)
    t_connected = time.perf_counter() - t0
    deadline = t0 + args.announce_timeout
    while (k := len(probe.lags["reported"])) < n and time.perf_counter() < deadline:
        time.sleep(1.0)
    announce = time.perf_counter() - t0
    rows += [("simulator connected and subscribed", f"{t_connected:.1f} s"),
             ("first reported applied", f"{k}/{n} devices in {announce:.1f} s ({k / announce:.0f}/s), "
                                        f"controller CPU {(time.process_time() - cpu0) / announce:.2f} cores")]
    desired_n, _ = sim.desired_since(0.0)
    rows.append(("devices with a desired hint", f"{desired_n}/{n}"))
    print(f"# announce phase done in {announce:.1f}s ({k}/{n})", flush=True)

    # steady state
    s0, w0, c0, of0 = sim.stats(), time.time(), time.process_time(), _overflow(stack)
    t_end, max_backlog, max_qos1 = time.perf_counter() + args.duration, 0, 0
    while time.perf_counter() < t_end:
        max_backlog = max(max_backlog, _backlog(stack))
        max_qos1 = max(max_qos1, _backlog_qos1(stack))
        time.sleep(2.0)
    s1, w1, c1 = sim.stats(), time.time(), time.process_time()
    cores = (c1 - c0) / (w1 - w0)
    sent = s1["sent"].get("telemetry", 0) - s0["sent"].get("telemetry", 0)
    lags = probe.window("telemetry", w0, w1)
    rep = probe.window("reported", w0, w1)
    rss, peak = rss_mib()
    rate = len(lags) / (w1 - w0)
    rows += [
        ("steady state measured", f"{w1 - w0:.0f} s"),
        ("telemetry sent / applied", f"{sent} / {len(lags)} ({sent / (w1 - w0):.0f}/s sent, {rate:.0f}/s applied, "
                                     f"{len(lags) / max(sent, 1):.1%})"),
        ("telemetry ingest lag p50 / p99", f"{percentile(lags, 50):.2f} s / {percentile(lags, 99):.2f} s"),
        ("reported lag p99", f"{percentile(rep, 99):.2f} s ({len(rep)} applied)"),
        ("bridge queue max (of it QoS 1) / QoS 0 dropped", f"{max_backlog} ({max_qos1}) / {_overflow(stack) - of0}"),
        ("controller CPU", f"{cores:.2f} cores" + (f" ({(c1 - c0) / len(lags) * 1000:.2f} ms per telemetry applied)"
                                                   if lags else "")),
        ("controller RSS", f"{rss:.0f} MiB (peak {peak:.0f} MiB; goal <= 1024)"),
        ("refused (reported / telemetry)", f"{probe.refused['reported']} / {probe.refused['telemetry']}"),
        ("handler CPU per message (reported / telemetry)",
         f"{probe.cpu_ms_per_message('reported'):.2f} ms / {probe.cpu_ms_per_message('telemetry'):.2f} ms"),
    ]
    if args.broker_restart:
        rows += restart(args, stack, sim, rate)
    rows.append(("load average at end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"))
    print(f"\n{n} simulated devices, telemetry every {args.telemetry_period:.0f}s, db {args.db}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:{width}s}  {value}")


def restart(args: argparse.Namespace, stack: SimStack, sim: SimProcesses, steady_rate: float) -> list[tuple[str, Any]]:
    n = args.devices
    print("# restarting the broker", flush=True)
    t = sim.mark()
    t0 = time.perf_counter()
    stack.broker.restart()
    deadline = t0 + args.restart_timeout
    while True:
        got, span = sim.desired_since(t)
        if span is not None or time.perf_counter() > deadline:
            break
        time.sleep(1.0)
    w1 = time.time()
    during = len(stack.probe.window("telemetry", t, w1)) / max(w1 - t, 1e-9)
    return [("broker restart: every device has desired again",
             f"{span:.1f} s" if span is not None else f"NO: {got}/{n} after {args.restart_timeout:.0f} s"),
            ("telemetry applied/s during vs before", f"{during:.0f} vs {steady_rate:.0f}"
                                                     + (f" ({during / steady_rate:.2f}x)" if steady_rate > 0 else ""))]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sim_only(args: argparse.Namespace, tmp: Path, devices: list[tuple[str, str]], procs: int, conns: int) -> None:
    import json
    import threading

    import paho.mqtt.client as mqtt

    from edgefleet.cloud.broker_auth import Account, BrokerAuthFiles, hash_password, new_password
    from sim_stack import SimBroker

    broker = SimBroker(data_dir=tmp / "mosquitto", auth_dir=tmp / "broker-auth")
    password = new_password()
    BrokerAuthFiles(broker.auth_dir).write([Account("counter", hash_password(password), "controller")])
    broker.start()
    lags: list[tuple[float, float]] = []
    lock = threading.Lock()

    def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            t = datetime.fromisoformat(json.loads(m.payload)["device_time"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            return
        with lock:
            lags.append((now, now - t))

    counter = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter", protocol=mqtt.MQTTv5)
    counter.username_pw_set("counter", password)
    counter.on_message = on_message
    counter.on_connect = lambda c, *_: c.subscribe("fleet/v1/devices/+/telemetry", qos=0)
    counter.connect(broker.host, broker.port)
    counter.loop_start()
    sim = SimProcesses(broker.host, broker.sim_port, devices, processes=procs, auth=broker.sim_auth,
                       connections=conns, telemetry_period_s=args.telemetry_period, goodbye=False)
    rows: list[tuple[str, str]] = []
    try:
        t0 = time.perf_counter()
        sim.start(timeout=args.announce_timeout)
        rows.append(("simulator connected, subscribed, announced", f"{time.perf_counter() - t0:.1f} s"))
        pids = [p.pid for p, _, _ in sim.children if p.pid is not None]
        s0, w0, c0 = sim.stats(), time.time(), sum(_cpu_s(p) for p in pids)
        time.sleep(args.duration)
        s1, w1, c1 = sim.stats(), time.time(), sum(_cpu_s(p) for p in pids)
        with lock:
            window = [lag for t, lag in lags if w0 <= t < w1]
        sent = s1["sent"].get("telemetry", 0) - s0["sent"].get("telemetry", 0)
        rows += [("measured", f"{w1 - w0:.0f} s"),
                 ("telemetry sent / delivered", f"{sent} / {len(window)} ({sent / (w1 - w0):.0f}/s)"),
                 ("delivery lag p50 / p99", f"{percentile(window, 50) * 1000:.0f} ms / {percentile(window, 99) * 1000:.0f} ms"),
                 ("simulator CPU", f"{(c1 - c0) / (w1 - w0):.2f} cores in {len(pids)} processes "
                                   f"({(c1 - c0) / max(sent, 1) * 1e6:.0f} us per signed telemetry)"),
                 ("load average at end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")]
    finally:
        sim.stop()
        counter.disconnect()
        counter.loop_stop()
        broker.stop()
    print(f"\n{len(devices)} simulated devices (simulator only), telemetry every {args.telemetry_period:.0f}s")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:{width}s}  {value}")


if __name__ == "__main__":
    main()
