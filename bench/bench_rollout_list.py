"""The rollout list page's cost against the size of the rollout history, in one run.

One SQLite database (migrations) bulk-seeded with ``tests/rollout_views/seed.py`` (a running
rollout over ``--members`` devices in every status) and then ``--history`` more rollouts over
copies of its members (``tests/rollout_views/test_rollout_list.add_rollouts``). Per history
size it times, interleaved, one page of ``--limit`` rows computed two ways:

* *per row*: what ``/ui/rollouts`` did before — the page's rows, then ``service.status`` for
  each (it folds each rollout's members);
* *grouped*: ``service.list_page`` — a keyset page and one GROUP BY over the page's members.

It prints statements and p50 per page for both and the ratio.

    python bench/bench_rollout_list.py [--members 300] [--history 20,400] [--limit 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event  # noqa: E402
from sqlmodel import Session  # noqa: E402
from tests.rollout_views.seed import seed_rollout  # noqa: E402
from tests.rollout_views.test_rollout_list import add_rollouts  # noqa: E402

from edgefleet.cloud import db  # noqa: E402
from edgefleet.cloud.rollout import listing, service  # noqa: E402


def per_row(s: Session, limit: int, now: float) -> int:
    page = listing.page_rollouts(s, state=None, limit=limit, cursor=None)
    return sum(service.status(s, r.id, now, devices=False, events=0)["on_model"] for r in page.rows)


def grouped(s: Session, limit: int, now: float) -> int:
    return sum(f.on_model for _, f in service.list_page(s, limit=limit)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=300)
    ap.add_argument("--history", default="20,400")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.migrate(engine)
        now = time.time()
        seed_rollout(engine, a.members, now=now)
        have = 1
        print(f"{'rollouts':>9} {'per-row stmts':>14} {'per-row p50':>12} {'grouped stmts':>14} {'grouped p50':>12} {'ratio':>6}")
        for target in (int(x) for x in a.history.split(",")):
            if target > have:
                add_rollouts(engine, target - have, now, first=have)
                have = target
            old = _run(engine, per_row, a.limit, a.repeat)
            new = _run(engine, grouped, a.limit, a.repeat)
            assert old[2] == new[2], (old, new)  # the same figures
            print(f"{have:>9} {old[0]:>14} {old[1] * 1000:>10.1f}ms {new[0]:>14} {new[1] * 1000:>10.1f}ms "
                  f"{old[1] / new[1]:>6.1f}")
        engine.dispose()


def _run(engine: Any, fn: Any, limit: int, repeat: int) -> tuple[int, float, int]:
    seen: list[str] = []

    def grab(*args: Any) -> None:
        seen.append(args[2])

    times, result = [], 0
    for i in range(repeat):
        with Session(engine) as s:
            if i == repeat - 1:
                event.listen(engine, "before_cursor_execute", grab)
            start = time.perf_counter()
            result = fn(s, limit, time.time())
            times.append(time.perf_counter() - start)
            if i == repeat - 1:
                event.remove(engine, "before_cursor_execute", grab)
    return len(seen), statistics.median(times), result


if __name__ == "__main__":
    main()
