"""Signed reports: what verification costs the controller, and what signing costs the agent.

Controller: a real ``Controller`` (SQLite database, migrations, the telemetry handlers that
store history, pair stats and rollout folds) and its real ``MqttBridge.handle`` in a loop.
In interleaved rounds it ingests unsigned telemetry with verification switched off (the
ingest path as it was) and signed telemetry that is verified; the goal is CPU per verified
message / CPU per unsigned message <= 1.3 (medians over rounds, same run, same database).

Agent: CPU per telemetry period for ``ReportSigner.sign`` against plain ``encode`` of the
same message, and the bytes the signature fields add to each message.

    python bench/bench_signed_ingest.py [--rounds 7] [--per-round 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.signed_reports.keys import SimKey, register  # noqa: E402

from edgefleet.cloud.bridge import MqttBridge  # noqa: E402
from edgefleet.cloud.devices import fleet, report_verify  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402
from edgefleet.edge_agent.report_signer import ReportSigner  # noqa: E402
from edgefleet.protocols import (  # noqa: E402
    Channel,
    LatencyStats,
    ModelRef,
    ShadowStats,
    Telemetry,
    encode,
    telemetry_topic,
)

CONTROL = ModelRef(name="digits", version="1.0", digest="a" * 64)
CANDIDATE = ModelRef(name="digits", version="1.1", digest="b" * 64)


def telemetry(device_id: str, start: datetime) -> Telemetry:
    """A realistic period: ten classes, a confidence histogram, shadow stats, hardware figures."""
    classes = {str(i): 30 + i for i in range(10)}
    return Telemetry(
        device_id=device_id, period_start=start, period_end=start + timedelta(seconds=10), control=CONTROL,
        frames=sum(classes.values()), fps=14.9, latency_ms=LatencyStats(p50=4.1, p95=6.3, p99=8.8, mean=4.4, max=11.0),
        class_counts=classes, confidence_histogram=[0, 0, 1, 2, 3, 5, 9, 20, 60, 245],
        shadow=ShadowStats(candidate=CANDIDATE, frames=340, disagreements=12, agreement=0.965,
                           per_class_disagreements={"8": 9, "3": 3}, latency_ms=LatencyStats(p99=9.5),
                           confusion={"8": {"8": 20, "3": 9}, "3": {"3": 30, "8": 3}}),
        hardware={"temp_max_c": 51.5, "cpu_percent": 38.0, "power_total_mw": 7100, "gpu_percent": 44.0},
    )


def cpu_per_message(fn, n: int) -> float:
    t = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=300)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-signed-"))
    controller = Controller(load_settings(tmp, env={}))
    controller.migrate()
    with controller.session() as s:
        fleet.enrol_device(s, "cam-plain", "cpu-x86_64")
        fleet.enrol_device(s, "cam-signed", "cpu-x86_64")
    key = SimKey("cam-signed")
    register(controller, key)
    bridge = MqttBridge("127.0.0.1", 1, handlers={Channel.TELEMETRY: controller._on_telemetry})  # never connects
    verify = report_verify.verify_telemetry
    clock = {"cam-plain": datetime.now(timezone.utc) - timedelta(days=30), "cam-signed": datetime.now(timezone.utc) - timedelta(days=30)}

    def next_period(device_id: str) -> Telemetry:
        clock[device_id] += timedelta(seconds=10)
        return telemetry(device_id, clock[device_id])

    # payloads are made before the clock starts: only the controller's work is timed
    def batch(device_id: str, n: int) -> list[bytes]:
        if device_id == "cam-signed":
            return [key.sign(next_period(device_id)) for _ in range(n)]
        return [encode(next_period(device_id)) for _ in range(n)]

    def run(device_id: str, payloads: list[bytes]) -> float:
        topic = telemetry_topic(device_id)

        def one(i: int) -> None:
            assert bridge.handle(topic, payloads[i]) == "ok"
        return cpu_per_message(one, len(payloads))

    unsigned, signed = [], []
    run("cam-signed", batch("cam-signed", 50))  # warm up both paths
    report_verify.verify_telemetry = lambda s, m, now=None: None  # type: ignore[assignment]
    run("cam-plain", batch("cam-plain", 50))
    for _ in range(args.rounds):
        plain = batch("cam-plain", args.per_round)
        report_verify.verify_telemetry = lambda s, m, now=None: None  # type: ignore[assignment]
        unsigned.append(run("cam-plain", plain))
        report_verify.verify_telemetry = verify
        signed.append(run("cam-signed", batch("cam-signed", args.per_round)))
    report_verify.verify_telemetry = verify
    u, v = statistics.median(unsigned), statistics.median(signed)
    print(f"controller CPU per telemetry message: unsigned {u * 1e3:.3f} ms, verified {v * 1e3:.3f} ms; "
          f"ratio {v / u:.2f} (goal <= 1.3; {args.rounds} interleaved rounds of {args.per_round})")

    # ----- agent -----
    signer = ReportSigner(tmp / "agent", "cam-agent")
    msg = telemetry("cam-agent", datetime.now(timezone.utc))
    n = 2000
    plain_cpu = cpu_per_message(lambda _i: encode(msg), n)
    signed_cpu = cpu_per_message(lambda _i: signer.sign(msg), n)
    added = len(signer.sign(msg)) - len(encode(msg))
    print(f"agent CPU per telemetry period: encode {plain_cpu * 1e6:.0f} µs, sign+encode {signed_cpu * 1e6:.0f} µs "
          f"(+{(signed_cpu - plain_cpu) * 1e6:.0f} µs for signing); bytes added per message: {added} "
          f"of {len(encode(msg))}")
    controller.engine.dispose()


if __name__ == "__main__":
    main()
