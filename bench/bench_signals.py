"""Sidecar signals: what a frame's context costs with them, and how fast the reader takes samples.

    python bench/bench_signals.py [--frames 200000] [--samples 50000] [--flood-seconds 3]

1. ``Campaigns.context(now)`` per frame, measured side by side in one run: the application's
   per-frame context alone, merged with 8 sidecar signals (2 s of 100 Hz history each), and with 32 (the most a table
   keeps; 34 keys in all, so the merge caps them at the schema's 32).
2. The reader thread on a real UNIX datagram socket: samples of 4 signals sent as fast as one
   writer can, samples kept per second (a CAN bridge at 100 Hz needs 100/s).
3. The control path under a flooding writer: the real control ``ModelRunner`` (ShuffleNet,
   ONNX Runtime CPU, 1 thread, ``bench_pipeline_fps.shufflenet_runner``) predicting in a loop on
   the main thread while the reader takes samples; rounds side by side (ABC, twice): no
   writer, a writer process sending as fast as it can to a reader capped at its default
   2000/s, and the same flood to an uncapped reader. Prints predictions/s and p99 latency.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgefleet.edge_agent.campaigns import Campaigns
from edgefleet.edge_agent.signal_source import SignalAddress, SignalSource
from edgefleet.edge_agent.signals import SignalTable


def per_frame_us(campaigns: Campaigns, frames: int, now: float) -> float:
    t0 = time.perf_counter()
    for _ in range(frames):
        campaigns.context(now)
    return (time.perf_counter() - t0) / frames * 1e6


def fill(table: SignalTable, keys: int, now: float) -> None:
    """Two seconds of a 100 Hz bus, every signal changing each sample (the most history kept)."""
    for k in range(200):
        t = now - 2.0 + k / 100
        table.update(t, {f"can_{i:02d}": float(k + i) for i in range(keys)}, now=t)


FLOOD = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
line = b'{"signals": {"steering_deg": -25.0, "speed_kmh": 12, "brake": false, "gear": "D"}}\n'
while True:
    try:
        s.sendto(line, sys.argv[1])
    except OSError:
        pass
"""


def control_round(runner: object, frame: np.ndarray, seconds: float) -> tuple[float, float]:
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        runner.predict(frame)  # type: ignore[attr-defined]
        lat.append(time.perf_counter() - t0)
    return len(lat) / seconds, float(np.percentile(lat, 99)) * 1e3


def flood_rounds(seconds: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_pipeline_fps import shufflenet_runner

    with tempfile.TemporaryDirectory() as d:
        runner = shufflenet_runner(Path(d))
        frame = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        runner.predict(frame)
        results: dict[str, list[tuple[float, float]]] = {"no writer": [], "flood, capped 2000/s": [],
                                                         "flood, uncapped": []}
        for _ in range(2):
            for name in results:
                src = None
                writer = None
                if name != "no writer":
                    src = SignalSource(SignalAddress("unix", path=Path(d) / "s.sock"), SignalTable(),
                                       max_rate_hz=2000.0 if "capped" in name and "un" not in name else 1e9)
                    src.start()
                    writer = subprocess.Popen([sys.executable, "-c", FLOOD, str(src.address.path)])
                    time.sleep(0.3)
                try:
                    results[name].append(control_round(runner, frame, seconds))
                finally:
                    if writer is not None:
                        writer.kill()
                        writer.wait()
                    if src is not None:
                        parsed = src.received
                        src.stop()
                        print(f"  ({name}: {parsed / seconds:,.0f} samples/s parsed, {src.dropped['rate']:,} dropped by the cap)")
        for name, rs in results.items():
            fps = sum(r[0] for r in rs) / len(rs)
            p99 = max(r[1] for r in rs)
            print(f"control predictions/s {fps:7.1f}, p99 {p99:6.2f} ms — {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--flood-seconds", type=float, default=3.0)
    args = ap.parse_args()
    now = time.time()
    plain = Campaigns(None)
    plain.set_context({"speed_kmh": 12, "road": "wet"}, ts=now)
    side = Campaigns(None)
    side.set_context({"speed_kmh": 12, "road": "wet"}, ts=now)
    side.signals = SignalTable(max_age_s=0.5)
    fill(side.signals, 32, now)
    few = Campaigns(None)
    few.set_context({"speed_kmh": 12, "road": "wet"}, ts=now)
    few.signals = SignalTable(max_age_s=0.5)
    fill(few.signals, 8, now)
    a, b, c = (per_frame_us(x, args.frames, now) for x in (plain, few, side))
    print(f"context per frame: per-frame only {a:.2f} us, with 8 sidecar signals {b:.2f} us, "
          f"with 32 (capped at 32 keys) {c:.2f} us")

    with tempfile.TemporaryDirectory() as d:
        src = SignalSource(SignalAddress("unix", path=Path(d) / "signals.sock"), SignalTable(), max_rate_hz=1e6)
        src.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as w:
            line = json.dumps({"signals": {"steering_deg": -25.0, "speed_kmh": 12, "brake": False, "gear": "D"}}).encode()
            t0 = time.perf_counter()
            for _ in range(args.samples):
                w.sendto(line, str(src.address.path))
            while src.received < args.samples and time.perf_counter() - t0 < 60:
                time.sleep(0.01)
            took = time.perf_counter() - t0
        src.stop()
    print(f"reader: {src.received} of {args.samples} samples kept in {took:.2f} s = {src.received / took:,.0f} samples/s")
    flood_rounds(args.flood_seconds)


if __name__ == "__main__":
    main()
