"""How much scoped policies cost per device: ``resolve`` with N scopes against none (the
fleet-wide settings only), and the maintenance-window check an agent makes before a switch.

Prints ratios measured side by side in this run (no absolute claims):

    .venv/bin/python bench/bench_policy_resolve.py [--devices 2000] [--scopes 50]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone

from edgefleet.cloud.policy import Scope, resolve
from edgefleet.cloud.rollout.selector import DeviceInfo, parse_selector
from edgefleet.protocols import CapturePolicy
from edgefleet.protocols.messages import NetworkPolicy
from edgefleet.protocols.windows import MaintenancePolicy, MaintenanceWindow, is_open, next_open


def _time(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--scopes", type=int, default=50)
    args = ap.parse_args()
    profiles = ["jetson-orin-nano", "jetson-orin-agx", "jetson-xavier-nx", "cpu-x86_64"]
    devices = [DeviceInfo(f"cam-{i:05d}", profiles[i % 4], {"site": str(i % 20), "ring": str(i % 3)})
               for i in range(args.devices)]
    window = MaintenanceWindow(days=["mon", "tue", "wed", "thu", "fri"], start="02:00", duration_s=7200,
                               timezone="Europe/Berlin")
    scopes = [Scope(name=f"s{i:03d}", selector=parse_selector(f"hw:{profiles[i % 4]},tag:site={i % 20}"),
                    priority=i % 3, capture={"sample_rate": 0.01 * (i % 10)},
                    network={"download": "unmetered"} if i % 2 else {}, windows=(window,) if i % 3 == 0 else None)
               for i in range(args.scopes)]
    cap, net = CapturePolicy(), NetworkPolicy()
    base = _time(lambda: [resolve([], d, capture=cap, network=net) for d in devices])
    scoped = _time(lambda: [resolve(scopes, d, capture=cap, network=net) for d in devices])
    print(f"resolve, {args.devices} devices: {args.scopes} scopes vs none = {scoped / base:.2f}x "
          f"({scoped / args.devices * 1e6:.0f} µs vs {base / args.devices * 1e6:.0f} µs per device)")

    policy = MaintenancePolicy(windows=[window, MaintenanceWindow(days=["sat"], start="23:30", duration_s=3 * 3600,
                                                                  timezone="America/New_York")])
    start = datetime(2026, 12, 2, tzinfo=timezone.utc)
    instants = [start + timedelta(minutes=7 * i) for i in range(5000)]
    t_two = _time(lambda: [(is_open(policy, t, timezone.utc), next_open(policy, t, timezone.utc)) for t in instants])
    per_check, per_resolve = t_two / len(instants), base / args.devices
    print(f"agent window check (is_open + next_open, 2 windows, 2 zones) = {per_check / per_resolve:.1f}x "
          f"one resolve without scopes ({per_check * 1e6:.0f} µs per check)")


if __name__ == "__main__":
    main()
