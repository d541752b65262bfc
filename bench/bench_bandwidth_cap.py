"""Throttled transfer: achieved rate ÷ cap for capped bundle downloads (goal 0.9–1.0).

    python bench/bench_bandwidth_cap.py [--caps 100000,500000,2000000] [--seconds 3]

For each cap, a loopback HTTP server (Range support) serves ``cap × seconds`` random
bytes; the device's ``ResumableFetcher`` downloads them through a ``TokenBucket`` at that
cap three ways, in the same run: straight through; resumed after a restart (a part file
with the first third, a fresh bucket); and with the connection dropped at 40 % (the same
bucket resumes with Range). Printed per row: bytes, wall seconds, achieved B/s and the
ratio to the cap; plus the uncapped rate of the same server for comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.network.conftest import RangeServer  # noqa: E402

from edgefleet.registry.tuf.fetcher import ResumableFetcher  # noqa: E402
from edgefleet.registry.tuf.ratelimit import TokenBucket  # noqa: E402


def _run(url: str, part: Path, length: int, cap: float | None) -> tuple[int, float]:
    before = part.stat().st_size if part.exists() else 0
    fetcher = ResumableFetcher(limiter=TokenBucket(cap), gap_timeout=30, deadline=3600)
    try:
        t0 = time.monotonic()
        fetcher.download_to(url, part, length)
        return length - before, time.monotonic() - t0
    finally:
        fetcher.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--caps", default="100000,500000,2000000", help="caps in bytes/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each transfer at its cap")
    args = ap.parse_args()
    print(f"{'cap B/s':>10} {'case':<22} {'bytes':>10} {'wall s':>7} {'achieved B/s':>13} {'÷ cap':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for cap in (int(c) for c in args.caps.split(",")):
            data = os.urandom(int(cap * args.seconds))
            for case in ("straight", "resumed after restart", "dropped at 40 %"):
                server = RangeServer(data, drop_after=int(0.4 * len(data)) if case.startswith("dropped") else None)
                part = Path(tmp) / f"{cap}-{case[:4]}.part"
                if case.startswith("resumed"):
                    part.write_bytes(data[: len(data) // 3])
                try:
                    n, wall = _run(server.url, part, len(data), cap)
                finally:
                    server.close()
                print(f"{cap:>10} {case:<22} {n:>10} {wall:>7.2f} {n / wall:>13.0f} {n / wall / cap:>6.3f}")
            server = RangeServer(data)
            try:
                n, wall = _run(server.url, Path(tmp) / f"{cap}-free.part", len(data), None)
            finally:
                server.close()
            print(f"{'(none)':>10} {'uncapped, same bytes':<22} {n:>10} {wall:>7.2f} {n / wall:>13.0f} {'-':>6}")


if __name__ == "__main__":
    main()
