"""Ingest CPU with the serving process's garbage collector tuned, against Python's defaults.

A real ``Controller`` (SQLite, migrations) with ``--devices`` enrolled simulated devices
(``edgefleet.sim``: their real signed messages); each device reports once, then sends
``--rounds`` periods of signed telemetry, and every period of the fleet is decoded
(``protocols.decode``) and applied by batched ingest (``devices.batch.apply``, batches of 256,
as the bridge's group commit). Each setting runs in its own interpreter, interleaved
(``--runs`` each): ``default`` keeps Python's thresholds (700, 10, 10), ``tuned`` calls
``cloud.interpreter.tune_gc`` as ``fleet cloud serve`` does. Printed per run: thread CPU per
telemetry message and the share of it spent collecting; then tuned ÷ default (medians).

    python bench/bench_ingest_gc.py [--devices 2000] [--rounds 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(mode: str, devices: int, rounds: int) -> dict[str, float]:
    from edgefleet.cloud.devices import batch, fleet, report_verify
    from edgefleet.cloud.interpreter import tune_gc
    from edgefleet.cloud.runtime import Controller
    from edgefleet.cloud.settings import load_settings
    from edgefleet.protocols import ModelRef, Phase, Reported, Telemetry, decode
    from edgefleet.sim.device import SimDevice

    controller = Controller(load_settings(Path(tempfile.mkdtemp(prefix="bench-gc-")), env={}))
    controller.migrate()
    sims = [SimDevice(f"sim-{i:06d}", "jetson-orin-nano", 0, seed="bench-gc", telemetry_period_s=60)
            for i in range(devices)]
    with controller.session() as s:
        for d in sims:
            fleet.enrol_device(s, d.device_id, d.hardware_id)
        s.commit()
    with controller.session() as s:
        for d in sims:
            row = fleet.get_device(s, d.device_id)
            report_verify.set_key(row, d.key.public_key)
            s.add(row)
        s.commit()
    ref = ModelRef(name="digits", version="1.0", digest="a" * 64)
    for d in sims:
        d.installed = d.target = ref
        d.phase = Phase.HEALTHY

    def apply(msgs: list[Any]) -> None:
        for i in range(0, len(msgs), 256):
            batch.apply(controller.ingest_session, msgs[i:i + 256], check_labels=controller.labels.check_telemetry,
                        replay_window=controller.settings.replay_window)

    now = time.time() - 3600
    apply([decode(d.sign(d.reported(), now), Reported) for d in sims])
    periods = []
    for _ in range(rounds + 1):
        now += 60
        periods.append([d.sign(d.telemetry(now), now) for d in sims])
    apply([decode(p, Telemetry) for p in periods[0]])  # warm: statements compiled, pages cached
    if mode == "tuned":
        tune_gc()
    collecting, started = [0.0], [0.0]

    def clock(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            collecting[0] += time.thread_time() - started[0]

    gc.callbacks.append(clock)
    t0 = time.thread_time()
    for payloads in periods[1:]:
        apply([decode(p, Telemetry) for p in payloads])
    cpu = time.thread_time() - t0
    gc.callbacks.remove(clock)
    controller.engine.dispose()
    return {"ms_per_message": cpu / (devices * rounds) * 1e3, "gc_share": collecting[0] / cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", choices=("default", "tuned"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.devices, args.rounds)))
        return
    got: dict[str, list[dict[str, float]]] = {"default": [], "tuned": []}
    for run in range(args.runs):
        for mode in ("default", "tuned") if run % 2 == 0 else ("tuned", "default"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--devices", str(args.devices),
                                  "--rounds", str(args.rounds)], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            got[mode].append(r)
            print(f"run {run + 1} {mode:7s}: {r['ms_per_message']:.3f} ms CPU per telemetry message, "
                  f"{r['gc_share']:.0%} of it collecting garbage", flush=True)
    med = {m: statistics.median(r["ms_per_message"] for r in rs) for m, rs in got.items()}
    print(f"median: default {med['default']:.3f} ms, tuned {med['tuned']:.3f} ms per message; "
          f"tuned ÷ default {med['tuned'] / med['default']:.2f}")


if __name__ == "__main__":
    main()
