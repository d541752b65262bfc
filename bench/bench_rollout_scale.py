"""Benchmark: a good rollout to 1,000 simulated devices, against a direct deployment.

The controller (FastAPI on uvicorn, SQLite, MQTT bridge, rollout reconciler) runs in this
process; 1,000 simulated devices (``tests/rollout_e2e/simfleet.py``: the real MQTT
messages — status, desired, reported per phase, telemetry — without the agent) run in a
child process on a local broker (mosquitto when installed, else amqtt in the child).

Two deployments of the same size, one after the other, on the same fleet:

* baseline — ``fleet deploy`` (direct assignment, no waves) of digits:1.0 to every device;
* rollout  — ``fleet rollout start`` of digits:2.0, waves 1,10,50,100, soak 0s,
  gate failure<=0.02.

For each: wall time until every device reports the model healthy, controller CPU seconds
(``time.process_time`` of this process), and MQTT messages per device (every message under
``fleet/v1/devices/`` seen by an observer connection, both directions). Prints each
figure and the ratio rollout ÷ direct.

    python bench/bench_rollout_scale.py [--devices 1000] [--timeout 100]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_stack import LocalStack, local_stack  # noqa: E402

PROFILES = ("jetson-orin-nano", "jetson-orin-agx", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-nano")


def _devices(n: int) -> list[tuple[str, str]]:
    return [(f"sim-{i:04d}", PROFILES[i % len(PROFILES)]) for i in range(n)]


def _sim(host: str, port: int, protocol: str, n: int, ctl: Any, out: Any, auth: tuple[str, str] | None = None) -> None:
    """Child process: run the simulated fleet; answer 'count' and 'on DIGEST' requests."""
    from tests.rollout_e2e.simfleet import SimFleet

    fleet = SimFleet(host, port, _devices(n), protocol=protocol, connections=16, step_s=0.05, health_s=0.5, auth=auth)
    fleet.start()
    out.put("ready")
    while True:
        cmd = ctl.get()
        if cmd == "stop":
            break
        if cmd == "count":
            out.put(dict(fleet.counter))
        elif cmd.startswith("on "):
            out.put(fleet.on(cmd[3:]))
    fleet.stop()
    out.put("stopped")


class Sim:
    def __init__(self, host: str, port: int, protocol: str, n: int, auth: tuple[str, str] | None = None):
        ctx = mp.get_context("spawn")
        self.ctl, self.out = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_sim, args=(host, port, protocol, n, self.ctl, self.out, auth), daemon=True)
        self.proc.start()
        assert self.out.get(timeout=60) == "ready"

    def ask(self, cmd: str) -> Any:
        self.ctl.put(cmd)
        return self.out.get(timeout=30)

    def stop(self) -> None:
        self.ctl.put("stop")
        try:
            self.out.get(timeout=30)
        finally:
            self.proc.join(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=100.0, help="seconds allowed per deployment")
    args = ap.parse_args()

    from sqlmodel import Session
    from tests.signed_reports.keys import SimKey

    from edgefleet.cloud.tables import Device

    def enrol(controller: Any) -> None:  # the whole fleet in one transaction
        with Session(controller.engine) as s:
            keys = [(d, hw, SimKey(d)) for d, hw in _devices(args.devices)]  # the keys the simulated devices sign with
            s.add_all(Device(id=d, hardware_id=hw, tags={"site": "bench"}, report_public_key=k.public_key,
                             report_key_id=k.key_id) for d, hw, k in keys)
            s.commit()

    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    with local_stack(tmp, before_start=enrol, client_timeout=120, telemetry_period_s=10.0,
                     reconcile_interval_s=0.5) as stack:
        run(args, tmp, stack)


def run(args: argparse.Namespace, tmp: Path, stack: LocalStack) -> None:
    from tests.rollout_e2e.candidates import retag

    from edgefleet.cloud.demo.train import train_digit_models

    broker, protocol, client = stack.broker, stack.protocol, stack.client
    models = train_digit_models(tmp / "models")
    for version in ("1.0", "2.0"):
        m = retag(models[0], version)
        client.push_model(m.path, name="digits", version=version, manifest=m.manifest.model_dump(mode="json", by_alias=True))
    digests = {m["version"]: m["digest"] for m in client.list_models()}
    sim = Sim(broker.host, broker.port, protocol, args.devices, stack.controller.mqtt_credentials())
    time.sleep(3.0)  # every device online
    rows: dict[str, dict[str, float]] = {}
    try:
        for name, version, start in (
            ("direct", "1.0", lambda: client.deploy("digits:1.0", "control", None)),
            ("rollout", "2.0", lambda: client.start_rollout("digits:2.0", waves="1,10,50,100", soak="0s",
                                                             gates=["failure<=0.02"], device_timeout="2m")),
        ):
            msgs0, cpu0, t0 = sum(sim.ask("count").values()), time.process_time(), time.perf_counter()
            res = start()
            deadline = t0 + args.timeout
            while sim.ask(f"on {digests[version]}") < args.devices:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"{name}: not every device on {version} after {args.timeout:.0f}s")
                time.sleep(0.2)
            if name == "rollout":  # and the controller says so
                while client.rollout_status(res["id"], devices=False, events=0)["state"] != "completed":
                    if time.perf_counter() > deadline:
                        raise SystemExit("rollout did not complete in time")
                    time.sleep(0.2)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            time.sleep(1.0)  # let the last messages land before counting
            msgs = sum(sim.ask("count").values()) - msgs0
            rows[name] = {"wall_s": wall, "cpu_s": cpu, "msgs_per_device": msgs / args.devices}
            print(f"{name:8s} {args.devices} devices: wall {wall:6.1f} s   controller CPU {cpu:6.1f} s   "
                  f"MQTT messages/device {msgs / args.devices:5.1f}", flush=True)
    finally:
        sim.stop()
    d, r = rows["direct"], rows["rollout"]
    print(f"ratio rollout/direct: wall {r['wall_s'] / d['wall_s']:.2f}x   controller CPU "
          f"{r['cpu_s'] / d['cpu_s']:.2f}x   messages/device {r['msgs_per_device'] / d['msgs_per_device']:.2f}x")


if __name__ == "__main__":
    main()
