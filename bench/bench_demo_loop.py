"""``fleet demo --loop`` on this machine: the weak class's disagreement after ÷ before (goal
≤ 0.1), captures uploaded ÷ frames seen, and wall time end to end.

    python bench/bench_demo_loop.py [--agents 3] [--fps 15] [--find 30] [--quota 300] [--measure 30] [--runs 1]

Runs the real loop (broker, controller, agent processes; see ``cloud/demo/loop.py``) with
the given sizes, ``--runs`` times, and prints each run's figures and their medians. The
ratio is its own baseline: the candidate before and after the loop, measured in the same
run on the same fleet. The same figures end ``fleet demo --loop``'s output.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from rich.console import Console

from edgefleet.cloud.demo.loop import DemoLoop, LoopSizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--find", type=float, default=30.0, help="seconds of shadow to find the weak class")
    ap.add_argument("--quota", type=int, default=300, help="captures the campaign collects")
    ap.add_argument("--measure", type=float, default=30.0, help="seconds of shadow to measure the new candidate")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="print only the figures")
    args = ap.parse_args()
    sizes = LoopSizes(find_s=args.find, quota=args.quota, measure_s=args.measure)
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
            console = Console(quiet=args.quiet)
            run = DemoLoop(sizes=sizes, agents=args.agents, fps=args.fps, data_dir=Path(tmp), console=console)
            code = run.run()
            if code != 0:
                raise SystemExit(f"run {i + 1}: the loop failed")
            f = run.figures
            rows.append(f)
            print(f"run {i + 1}: class {f['weak']} disagreement {f['before']:.1%} -> {f['after']:.1%}  "
                  f"after/before {f['ratio']:.3f} (goal <= 0.1)  captures/frames {f['captures']}/{f['frames']} "
                  f"= {f['captures'] / max(f['frames'], 1):.4f}  finding->promotion {f['find_to_promote_s']:.0f}s  "
                  f"wall {f['wall_s']:.0f}s")
    if len(rows) > 1:
        med = {k: statistics.median(r[k] for r in rows) for k in ("ratio", "find_to_promote_s", "wall_s")}
        print(f"median of {len(rows)}: after/before {med['ratio']:.3f}  finding->promotion "
              f"{med['find_to_promote_s']:.0f}s  wall {med['wall_s']:.0f}s")


if __name__ == "__main__":
    main()
