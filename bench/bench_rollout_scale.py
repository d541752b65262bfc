"""Benchmark: a good rollout to N simulated devices (default 1,000; issue 14's goal: 10,000 in
≤ 60 s, ≤ 3 ms controller CPU per device), against a direct deployment in the same run.

The controller (FastAPI on uvicorn, SQLite or PostgreSQL, MQTT bridge, rollout reconciler)
runs in this process; the devices are ``edgefleet.sim`` (the real MQTT messages — status,
desired, signed reported per phase, signed telemetry — without the agent, many devices per
connection) in ``--processes`` child processes, on mosquitto (``bench/sim_stack.py``: the
simulator logs in on its own listener with a bench-only account that has device rights
for every device id). Devices are enrolled in bulk, straight into the database.

Two deployments of the same size, one after the other, on the same fleet:

* direct  — ``fleet deploy`` (direct assignment, no waves) of digits:1.0 to every device
  (today's per-device cost, the baseline);
* rollout — ``fleet rollout start`` of digits:2.0, waves 1,10,50,100, soak 0s,
  gate failure<=0.02.

For each: wall time until every device reports the model healthy and the controller has
applied each of those reports (and, for the rollout, the controller says ``completed``),
controller CPU seconds (``time.process_time`` of this process: the controller's threads,
plus this script's light polling), CPU per device, and
MQTT messages per device (both directions, counted by the simulator). Prints one table
and the ratio rollout ÷ direct.

    python bench/bench_rollout_scale.py --devices 10000 --db sqlite
    python bench/bench_rollout_scale.py --devices 10000 --db postgres   # DATABASE_URL or a throwaway cluster
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edgefleet.sim import SimProcesses, device_ids  # noqa: E402
from sim_stack import SimStack, postgres_url, rss_mib, sim_stack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--processes", type=int, default=0, help="simulator processes (default: one per 5,000 devices, 1..4)")
    ap.add_argument("--connections", type=int, default=0, help="MQTT connections per simulator process "
                    "(default: one per 1,000 devices)")
    ap.add_argument("--telemetry-period", type=float, default=60.0, help="seconds between a device's telemetry")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per deployment")
    ap.add_argument("--log", type=Path, default=None, help="write the controller's log (INFO) to this file")
    ap.add_argument("--batch-wait", type=float, default=None, help="the controller's ingest_batch_wait_s "
                    "(default: its default): how long a batch waits for more messages after its first")
    ap.add_argument("--python-gc", action="store_true", help="keep Python's garbage-collector settings "
                    "(the baseline of cloud/interpreter.py's tuning, which fleet cloud serve applies)")
    args = ap.parse_args()
    if args.log is not None:
        import logging

        handler = logging.FileHandler(args.log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("edgefleet").addHandler(handler)
        logging.getLogger("edgefleet").setLevel(logging.INFO)
    procs = args.processes or max(1, min(4, -(-args.devices // 5000)))
    conns = args.connections or max(1, -(-args.devices // (1000 * procs)))
    devices = device_ids(args.devices)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    print(f"# {args.devices} simulated devices in {procs} process(es) x {conns} connection(s), db {args.db}, "
          f"telemetry every {args.telemetry_period:.0f}s, "
          f"{'Python' if args.python_gc else 'tuned'} garbage collection, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    with (postgres_url() if args.db == "postgres" else nullcontext(None)) as url, \
            sim_stack(tmp, devices, database_url=url, telemetry_period_s=args.telemetry_period, client_timeout=900,
                      reconcile_interval_s=0.5, gc_gen0_threshold=0 if args.python_gc else 20_000,
                      **({} if args.batch_wait is None else {"ingest_batch_wait_s": args.batch_wait})) as stack:
        print(f"# enrolled in {stack.enrol_s:.1f}s", flush=True)
        sim = SimProcesses(stack.broker.host, stack.broker.sim_port, devices, processes=procs,
                           auth=stack.broker.sim_auth, connections=conns, step_s=0.05, health_s=0.5,
                           telemetry_period_s=args.telemetry_period)
        t0 = time.perf_counter()
        sim.start()
        try:
            run(args, tmp, stack, sim, t0)
        finally:
            sim.stop()


def run(args: argparse.Namespace, tmp: Path, stack: SimStack, sim: SimProcesses, t_connect: float) -> None:
    from tests.rollout_e2e.candidates import retag

    from edgefleet.cloud.demo.train import train_digit_models

    client, n = stack.client, args.devices
    models = train_digit_models(tmp / "models")
    for version in ("1.0", "2.0"):
        m = retag(models[0], version)
        client.push_model(m.path, name="digits", version=version, manifest=m.manifest.model_dump(mode="json", by_alias=True))
    digests = {m["version"]: m["digest"] for m in client.list_models()}
    # every device announced (status + signed reported applied) before the clock starts
    deadline = time.perf_counter() + args.timeout
    while len(stack.probe.lags["reported"]) < n:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {len(stack.probe.lags['reported'])}/{n} devices announced after {args.timeout:.0f}s")
        time.sleep(0.5)
    print(f"# fleet connected and every device's first reported applied in {time.perf_counter() - t_connect:.1f}s",
          flush=True)
    from edgefleet.cloud.drift import load_evidently

    load_evidently()  # the controller's one-off background import (seconds), done before any clock starts
    time.sleep(2.0)
    rows: dict[str, dict[str, float]] = {}
    states: dict[str, str] = {}
    for name, version, start in (
        ("direct", "1.0", lambda: client.deploy("digits:1.0", "control", None)),
        ("rollout", "2.0", lambda: client.start_rollout("digits:2.0", waves="1,10,50,100", soak="0s",
                                                         gates=["failure<=0.02"], device_timeout="2m")),
    ):
        msgs0, cpu0, t0 = sim.messages(), time.process_time(), time.perf_counter()
        loop0 = dict(stack.controller.loop_cpu_s)
        totals0 = dataclasses.replace(stack.controller.reconciler.totals)
        res = start()
        deadline = t0 + args.timeout
        while (on := sim.healthy_on(digests[version])) < n and time.perf_counter() < deadline:
            time.sleep(0.5)
        # done when the controller has applied every device's healthy report, not when the
        # devices sent it (a backlog left in ingest would be charged to the next deployment)
        if on == n:
            while (on := stack.probe.applied_healthy_on(digests[version])) < n and time.perf_counter() < deadline:
                time.sleep(0.5)
        state = "completed" if on == n else f"{on}/{n} healthy"
        if name == "rollout" and on == n:  # and the controller says so (status every 2 s, as `--watch` would)
            while (state := client.rollout_status(res["id"], devices=False, events=0)["state"]) != "completed" \
                    and time.perf_counter() < deadline:
                time.sleep(2.0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        time.sleep(1.0)  # let the last messages land before counting
        msgs = sim.messages() - msgs0
        done = max(on, 1)  # per device: of those that got there (all, unless it timed out)
        rows[name] = {"wall_s": wall, "cpu_s": cpu, "cpu_ms_per_device": cpu / done * 1000, "msgs_per_device": msgs / done}
        loop = {k: v - loop0.get(k, 0.0) for k, v in stack.controller.loop_cpu_s.items()}
        print(f"# {name}: controller loop CPU {loop.get('pass', 0):.1f}s of {cpu:.1f}s (reconcile "
              f"{loop.get('reconcile', 0):.1f}s, resend {loop.get('resend', 0):.1f}s)", flush=True)
        tot = stack.controller.reconciler.totals
        print(f"# {name}: reconcile passes over the rollout: {tot.read_full - totals0.read_full} read every device, "
              f"{tot.read_changed - totals0.read_changed} only those changed ({tot.reread - totals0.reread} devices), "
              f"{tot.skipped - totals0.skipped} skipped", flush=True)
        states[name] = state if state == "completed" else f"TIMED OUT after {args.timeout:.0f}s: {state}"
        print(f"# {name}: {states[name]} in {wall:.1f}s", flush=True)
        if name == "rollout" and state != "completed":  # what the controller says happened
            status = client.rollout_status(res["id"], devices=False, events=40)
            print(f"# rollout state {status['state']}; events:", flush=True)
            for event in status.get("events", []):
                print(f"#   {event}", flush=True)
        if state != "completed":
            break
    rss, peak = rss_mib()
    print(f"\n{'deployment':10s} {'devices':>8s} {'db':>8s} {'wall s':>8s} {'ctl CPU s':>10s} {'CPU ms/dev':>11s} "
          f"{'msgs/dev':>9s}  state")
    for name, row in rows.items():
        print(f"{name:10s} {n:8d} {args.db:>8s} {row['wall_s']:8.1f} {row['cpu_s']:10.1f} "
              f"{row['cpu_ms_per_device']:11.2f} {row['msgs_per_device']:9.1f}  {states[name]}")
    print(f"controller process RSS {rss:.0f} MiB (peak {peak:.0f} MiB); load average {os.getloadavg()[0]:.1f} at end; "
          f"telemetry refused {stack.probe.refused['telemetry']}, reported refused {stack.probe.refused['reported']}; "
          f"handler CPU per reported {stack.probe.cpu_ms_per_message('reported'):.2f} ms, per telemetry "
          f"{stack.probe.cpu_ms_per_message('telemetry'):.2f} ms")
    bridge = stack.controller.bridge
    if bridge is not None and bridge.batches:
        print(f"ingest batches {bridge.batches}, {bridge.batched_messages / bridge.batches:.1f} messages each on average "
              f"(ingest_batch_wait_s {stack.settings.ingest_batch_wait_s:g})")
    if len(rows) < 2 or states["rollout"] != "completed":
        return
    d, r = rows["direct"], rows["rollout"]
    print(f"{'ratio r/d':10s} {'':8s} {'':>8s} {r['wall_s'] / d['wall_s']:7.2f}x {r['cpu_s'] / d['cpu_s']:9.2f}x "
          f"{r['cpu_ms_per_device'] / d['cpu_ms_per_device']:10.2f}x {r['msgs_per_device'] / d['msgs_per_device']:8.2f}x")
    print(f"goal (issue 14): rollout wall <= 60 s: {'yes' if r['wall_s'] <= 60 else 'NO'}; "
          f"<= 3 ms controller CPU/device: {'yes' if r['cpu_ms_per_device'] <= 3 else 'NO'}")


if __name__ == "__main__":
    main()
