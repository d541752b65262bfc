"""Where the batched ingest's CPU goes, per telemetry message, in-process; and the pair fold
on plain values ÷ the model round trip it replaced, same run.

A real ``Controller`` (SQLite, migrations, the label book) with ``--devices`` enrolled devices,
each with its report key; every round each device sends one signed telemetry period with
shadow stats (``bench_ingest_throughput.Stream``: the same messages as that bench). Each
period of the fleet is decoded as the bridge decodes it and applied by ``devices.batch.apply``
in batches of ``--batch`` (256: the bridge's group commit at full load), with the garbage collector tuned as ``fleet
cloud serve`` tunes it. Timers on the batch's stages (thread CPU of the ingest thread; the
signature checks' own threads are not in it) give µs per message for: decoding, loading the
batch's device and pair rows, staging each message (checks, folds), writing (SQL), and the
rest (commit, signature hand-off). Printed as the median over ``--rounds`` rounds.

Then one period folded into a stored (device, pair) row, ``shadow_index.fold_pair_values``
(``merge_into_wire``: plain values) ÷ ``merge_shadow_stats`` of the validated stored row and
the period, dumped (what it did before), interleaved, best of 5 — a ratio from one run.

    python bench/bench_ingest_stages.py [--devices 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest_throughput import CANDIDATE, CONTROL, Stream  # noqa: E402
from edgefleet.cloud.devices import batch, fleet, report_verify  # noqa: E402
from edgefleet.cloud.interpreter import tune_gc  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402
from edgefleet.cloud.shadow_index import fold_pair_values  # noqa: E402
from edgefleet.cloud.tables import ModelVersion  # noqa: E402
from edgefleet.protocols import ShadowStats, Telemetry, decode  # noqa: E402
from edgefleet.shadow import merge_shadow_stats  # noqa: E402

STAGES = ("_load", "_stage_one", "_write")
NAMES = {"_load": "load rows", "_stage_one": "stage (checks, folds)", "_write": "write (SQL)"}


def _timed(spent: Counter[str], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - started
    return wrapped


def stages(devices: int, rounds: int, size: int = 256) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-bench-stages-"))
    (tmp / "controller.toml").write_text("[controller]\ntelemetry_period_s = 10.0\n")
    controller = Controller(load_settings(tmp, env={}))
    controller.migrate()
    ids = [f"bench-{i:05d}" for i in range(devices)]
    stream = Stream(ids)
    with controller.session() as s:
        for d in ids:
            device = fleet.get_device(s, fleet.enrol(s, d, "cpu-x86_64").device_id)
            report_verify.set_key(device, stream.keys[d].public_key)
            s.add(device)
        for ref in (CONTROL, CANDIDATE):  # catalog models: the label book finds their manifests
            s.add(ModelVersion(name=ref.name, version=ref.version, digest=ref.digest, size=1,
                               manifest={"labels": [str(i) for i in range(10)]}))
        s.commit()
    spent: Counter[str] = Counter()
    for name in STAGES:
        setattr(batch, name, _timed(spent, name, getattr(batch, name)))

    def run(payloads: list[tuple[str, bytes]]) -> None:
        for i in range(0, len(payloads), size):
            started = time.thread_time()
            msgs = [decode(p, Telemetry) for _topic, p in payloads[i:i + size]]
            spent["decode"] += time.thread_time() - started
            started = time.thread_time()
            results = batch.apply(controller.ingest_session, msgs, check_labels=controller.labels.check_telemetry,
                                  replay_window=controller.settings.replay_window)
            spent["apply"] += time.thread_time() - started
            assert all(r is None for r in results), results[:3]

    run(stream.next())  # warm: statements compiled, pair rows made
    tune_gc()
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        spent.clear()
        run(stream.next())
        row = {k: v * 1e6 / devices for k, v in spent.items()}
        row["rest of apply"] = row["apply"] - sum(row[n] for n in STAGES)
        row["total"] = row["decode"] + row.pop("apply")
        per_round.append(row)
    controller.engine.dispose()
    return {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}


def fold_ratio() -> tuple[float, float]:
    stream = Stream(["bench-fold"])
    msg = decode(stream.next()[0][1], Telemetry)
    now = datetime.now(timezone.utc)
    stored = fold_pair_values(fold_pair_values(None, msg, now), msg, now)
    shadow = msg.shadow
    assert shadow is not None

    def old() -> Any:
        return merge_shadow_stats([ShadowStats.model_validate(stored["stats"]), shadow]).model_dump(mode="json")

    assert fold_pair_values(stored, msg, now)["stats"] == old()
    n, new_best, old_best = 2000, float("inf"), float("inf")
    for _ in range(5):  # interleaved
        new_best = min(new_best, timeit.timeit(lambda: fold_pair_values(stored, msg, now), number=n) / n)
        old_best = min(old_best, timeit.timeit(old, number=n) / n)
    return new_best * 1e6, old_best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256, help="messages per batch (the bridge's group commit takes "
                    "up to 256; a quiet fleet's batches hold a few)")
    args = ap.parse_args()
    figures = stages(args.devices, args.rounds, args.batch)
    print(f"{args.devices} devices, signed telemetry with shadow stats, batches of {args.batch}, SQLite; "
          f"thread CPU of the ingest thread per message (median of {args.rounds} rounds)")
    total = figures["total"]
    for key in ("decode", *STAGES, "rest of apply"):
        print(f"  {NAMES.get(key, key):24s} {figures[key]:7.1f} µs  {figures[key] / total:5.1%}")
    print(f"  {'total':24s} {total:7.1f} µs")
    new, old = fold_ratio()
    print(f"pair fold: plain values {new:.1f} µs ÷ the model round trip {old:.1f} µs = {new / old:.2f}")


if __name__ == "__main__":
    main()
