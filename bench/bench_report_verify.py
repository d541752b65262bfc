"""One report signature check: libsodium (PyNaCl, what the controller uses) ÷ OpenSSL
(``cryptography``, the fallback where PyNaCl is missing), in the same run.

Real signed telemetry of ``--devices`` simulated devices (each its own key, as the
controller sees them): the canonical bytes each signature covers are computed once, then
interleaved rounds check every message with each library in turn, on one thread and through
``report_sig.verify_many`` (the batch's checks on ``VERIFY_THREADS`` threads). Printed:
µs per check (medians over rounds; thread CPU for one thread, wall for the batch) and the ratios.

    python bench/bench_report_verify.py [--devices 500] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.signed_reports.keys import SimKey  # noqa: E402

from edgefleet.protocols import LatencyStats, ModelRef, ShadowStats, Telemetry, decode  # noqa: E402
from edgefleet.registry import report_sig  # noqa: E402

CONTROL = ModelRef(name="digits", version="1.0", digest="a" * 64)
CANDIDATE = ModelRef(name="digits", version="2.0", digest="b" * 64)


def items(devices: int) -> list[tuple[str, bytes, str]]:
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    out = []
    for i in range(devices):
        key = SimKey(f"bench-{i:05d}")
        msg = Telemetry(device_id=key.device_id, period_start=start, period_end=start + timedelta(seconds=60),
                        control=CONTROL, frames=600, fps=10.0, latency_ms=LatencyStats(p50=1.0, p99=2.5),
                        class_counts={"3": 240, "8": 360}, confidence_histogram=[0, 1, 5, 20, 574],
                        shadow=ShadowStats(candidate=CANDIDATE, frames=600, disagreements=9, agreement=0.985,
                                           latency_ms=LatencyStats(p99=3.0)))
        got = decode(key.sign(msg), Telemetry)
        assert got.sig is not None
        out.append((key.public_key, got.signed_bytes(), got.sig))
    return out


def one_thread(check: object, work: list[tuple[str, bytes, str]]) -> float:
    started = time.thread_time()
    for item in work:
        assert check(*item)  # type: ignore[operator]
    return (time.thread_time() - started) * 1e6 / len(work)


def batch(work: list[tuple[str, bytes, str]]) -> float:
    started = time.perf_counter()
    assert all(report_sig.verify_many(work))
    return (time.perf_counter() - started) * 1e6 / len(work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if report_sig._sodium is None:
        raise SystemExit("PyNaCl is not installed: pip install -e '.[cloud]'")
    work = items(args.devices)
    print(f"{len(work)} signed telemetry messages ({len(work[0][1])} bytes signed each), "
          f"{report_sig.VERIFY_THREADS} verify threads")
    sodium_module = report_sig._sodium
    runs: dict[str, list[float]] = {k: [] for k in ("sodium", "openssl", "sodium batch", "openssl batch")}
    for _ in range(args.rounds):
        runs["sodium"].append(one_thread(report_sig.verify, work))
        runs["openssl"].append(one_thread(report_sig.verify_openssl, work))
        runs["sodium batch"].append(batch(work))
        report_sig._sodium = None  # verify_many's checks fall back to OpenSSL
        try:
            runs["openssl batch"].append(batch(work))
        finally:
            report_sig._sodium = sodium_module
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"  one thread, CPU per check:   libsodium {med['sodium']:6.1f} µs   OpenSSL {med['openssl']:6.1f} µs   "
          f"ratio {med['sodium'] / med['openssl']:.2f}")
    print(f"  verify_many, wall per check: libsodium {med['sodium batch']:6.1f} µs   OpenSSL {med['openssl batch']:6.1f} µs   "
          f"ratio {med['sodium batch'] / med['openssl batch']:.2f}")


if __name__ == "__main__":
    main()
