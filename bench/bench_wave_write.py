"""Benchmark (issue 14): the database work of assigning a model to many devices.

    python bench/bench_wave_write.py [--devices 10000] [--repeat 3]

A SQLite controller database (real migrations) seeded in bulk with N enrolled online devices
on model 1.0 (``bench_reconcile_pass.seed_fleet``). Two measurements, CPU
(``time.process_time``) per device, best of ``--repeat`` fresh databases:

* direct — ``fleet.assign`` of model 2.0 to every device in one transaction (what ``fleet
  deploy`` writes before it signs);
* wave   — the reconciler pass that starts a one-wave rollout of 2.0 over the same fleet and
  dispatches it (members, history, assignments, generations, dirty marks), with no publisher:
  signing and publishing are ``bench_sign.py``'s;

and, as the baseline measured in the same run, a full pass over the same rollout right
after, which reads and plans every member and writes nothing: wave ÷ that pass says what
writing a wave costs against reading it. To compare two versions of the code, run this file
against each (``PYTHONPATH=<worktree>/src``), back to back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlmodel import Session, select  # noqa: E402

from bench_reconcile_pass import OLD, seed_fleet  # noqa: E402
from edgefleet.cloud.db import make_engine, migrate  # noqa: E402
from edgefleet.cloud.devices import fleet  # noqa: E402
from edgefleet.cloud.rollout.reconciler import Reconciler  # noqa: E402
from edgefleet.cloud.rollout.service import RolloutCreate, start_rollout  # noqa: E402
from edgefleet.cloud.tables import ModelVersion  # noqa: E402

NEW = "d2" * 32


def fresh(path: Path, n: int) -> tuple[object, int]:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with Session(engine) as s:
        for version, digest in (("1.0", OLD), ("2.0", NEW)):
            s.add(ModelVersion(name="digits", version=version, digest=digest, size=1, manifest={}))
        s.commit()
        old = s.exec(select(ModelVersion).where(ModelVersion.digest == OLD)).one()
        old_id = old.id or 0
    seed_fleet(engine, n, mv_id=old_id, rollout_id=None, digest=OLD, version="1.0")
    return engine, old_id


def direct(tmp: Path, n: int, k: int) -> float:
    engine, _ = fresh(tmp / f"direct-{k}.db", n)
    ids = [f"dev-{i:06d}" for i in range(n)]
    with Session(engine, expire_on_commit=False) as s:
        mv = s.exec(select(ModelVersion).where(ModelVersion.digest == NEW)).one()
        c0 = time.process_time()
        changed = fleet.assign(s, mv, "control", ids)
        cpu = time.process_time() - c0
    assert len(changed) == n, len(changed)
    engine.dispose()  # type: ignore[attr-defined]
    return cpu


def wave(tmp: Path, n: int, k: int) -> tuple[float, float]:
    engine, _ = fresh(tmp / f"wave-{k}.db", n)
    with Session(engine, expire_on_commit=False) as s:
        start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1h",
                                       device_timeout="30m"), time.time())
    r = Reconciler(engine, None, holder="bench", lease_ttl_s=3600)  # type: ignore[arg-type]
    t = time.time()
    c0 = time.process_time()
    first = r.run_once(t)
    dispatch = time.process_time() - c0
    assert first.set_desired == n, first
    r.full_every_s = 0.0
    c0 = time.process_time()
    again = r.run_once(t + 1)
    read = time.process_time() - c0
    assert again.rollouts == 1 and again.set_desired == 0, again
    engine.dispose()  # type: ignore[attr-defined]
    return dispatch, read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.devices
    with tempfile.TemporaryDirectory(prefix="bench-wave-") as d:
        tmp = Path(d)
        directs = [direct(tmp, n, k) for k in range(args.repeat)]
        waves = [wave(tmp, n, k) for k in range(args.repeat)]
    best_direct = min(directs)
    best_wave, best_read = min(w for w, _ in waves), min(r for _, r in waves)
    print(f"# {n:,} devices, SQLite, best of {args.repeat} fresh databases (CPU)")
    print(f"direct fleet.assign        {best_direct:7.2f} s  {best_direct / n * 1e3:6.3f} ms per device")
    print(f"wave dispatch pass         {best_wave:7.2f} s  {best_wave / n * 1e3:6.3f} ms per device")
    print(f"full pass, nothing to do   {best_read:7.2f} s  {best_read / n * 1e3:6.3f} ms per device (the baseline)")
    print(f"ratio dispatch / full pass {best_wave / best_read:7.2f}x")


if __name__ == "__main__":
    main()
