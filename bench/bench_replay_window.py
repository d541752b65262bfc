"""Two controller replicas on one PostgreSQL sharing one device stream out of order: signed
reports lost with a strict seq rule (``replay_window`` 1) against the anti-replay window
(``replay_window`` 64, the default), and what a message costs to apply.

Real PostgreSQL (a throwaway server), real controllers (``Controller``), signed messages.
``--devices`` devices each send ``--messages`` signed messages in bursts of ``--burst`` (a
``reported``, then telemetry periods, as an agent's outbox after a reconnect). As a shared
subscription's round robin does, runs of ``--run`` messages go to replica A and B in turn; each replica applies its
share concurrently in batches of 1..``--batch`` (``devices.batch.apply``, the bridge's group
commit), so one device's messages commit out of order. Printed per window: messages
applied, refused ``replayed`` (lost: every message is a distinct, legitimate one), telemetry
rows stored, late history rows, and wall time per applied message.

    python bench/bench_replay_window.py [--devices 50] [--messages 20] [--burst 4] [--run 1] [--batch 16]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from tests.signed_reports.keys import SimKey  # noqa: E402

from edgefleet.cloud.db import make_engine  # noqa: E402
from edgefleet.cloud.devices import batch, fleet, report_verify  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402
from edgefleet.protocols import (  # noqa: E402
    LatencyStats,
    ModelRef,
    Phase,
    Reported,
    SlotReport,
    Telemetry,
    decode,
)

REF = ModelRef(name="digits", version="1.0", digest="a" * 64)


def stream(keys: dict[str, SimKey], messages: int, burst: int, rng: random.Random) -> list[Any]:
    """Each device's messages in bursts of ``burst`` (a ``reported``, then telemetry periods:
    what an agent's outbox sends after a reconnect), the devices' bursts in random order."""
    from datetime import datetime, timedelta, timezone

    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    out: list[Any] = []
    period = {d: 0 for d in keys}
    for n in range(messages // burst):
        order = list(keys)
        rng.shuffle(order)
        for d in order:
            key = keys[d]
            rep = Reported(device_id=d, generation=n + 1, agent_version="1", hardware_id="cpu-x86_64",
                           slots={"control": SlotReport(phase=Phase.ACTIVE if n % 2 else Phase.VERIFYING, installed=REF)})
            out.append(decode(key.sign(rep), Reported))
            for _ in range(burst - 1):
                start = t0 + timedelta(seconds=10 * period[d])
                period[d] += 1
                tel = Telemetry(device_id=d, period_start=start, period_end=start + timedelta(seconds=10),
                                control=REF, frames=100, fps=10.0, latency_ms=LatencyStats(p50=1.0, p99=2.0))
                out.append(decode(key.sign(tel), Telemetry))
    return out


def run(url: str, root: Path, window: int, args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    a = Controller(load_settings(root / f"a{window}", env={}, database_url=url, replay_window=window))
    b = Controller(load_settings(root / f"b{window}", env={}, database_url=url, replay_window=window))
    a.migrate()
    b.migrate()
    keys = {f"bench-{i:04d}": SimKey(f"bench-{i:04d}") for i in range(args.devices)}
    with a.session() as s:
        for d, key in keys.items():
            device = fleet.get_device(s, fleet.enrol(s, d, "cpu-x86_64").device_id)
            report_verify.set_key(device, key.public_key)
            s.add(device)
        s.commit()
    msgs = stream(keys, args.messages, args.burst, random.Random(7))
    telemetry = sum(1 for m in msgs if isinstance(m, Telemetry))
    shares: tuple[list[Any], list[Any]] = ([], [])
    for i, m in enumerate(msgs):
        shares[(i // args.run) % 2].append(m)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def replica(c: Controller, share: list[Any], seed: int) -> None:
        rng, i = random.Random(seed), 0
        while i < len(share):
            k = rng.randint(1, args.batch)
            results = batch.apply(c.ingest_session, share[i:i + k], check_labels=c.labels.check_telemetry,
                                  replay_window=c.settings.replay_window)
            with lock:
                outcomes.update("ok" if r is None else getattr(r, "outcome", "error") for r in results)
            i += k

    started = time.perf_counter()
    threads = [threading.Thread(target=replica, args=(a, shares[0], 1)),
               threading.Thread(target=replica, args=(b, shares[1], 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    with a.engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM telemetry_period")).scalar_one()
        late = conn.execute(text("SELECT count(*) FROM device_history WHERE message LIKE '%late report%'")).scalar_one()
    a.engine.dispose()
    b.engine.dispose()
    return {"window": window, "sent": len(msgs), "telemetry": telemetry, "outcomes": dict(outcomes), "telemetry_rows": rows,
            "late_history_rows": late, "wall_s": wall, "ms_per_applied": 1000 * wall / max(outcomes["ok"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--messages", type=int, default=20, help="per device")
    ap.add_argument("--burst", type=int, default=4, help="a device's messages in a row (one reported, then telemetry)")
    ap.add_argument("--run", type=int, default=1, help="messages in a row to one replica (the round robin)")
    ap.add_argument("--batch", type=int, default=16, help="largest batch a replica applies")
    args = ap.parse_args()
    from tests.outage.conftest import PgServer

    pg = PgServer()
    pg.start()
    try:
        with tempfile.TemporaryDirectory(prefix="edgefleet-bench-window-") as tmp:
            for window in (1, 64):
                r = run(pg.url, Path(tmp), window, args)
                o = r["outcomes"]
                lost = r["sent"] - o.get("ok", 0)
                print(f"replay_window={window:>2}: {r['sent']} sent, {o.get('ok', 0)} applied, "
                      f"{o.get('replayed', 0)} refused as replayed, {lost} lost ({100 * lost / r['sent']:.1f}%), "
                      f"{r['telemetry_rows']} telemetry rows of {r['telemetry']}, "
                      f"{r['late_history_rows']} late history rows; {r['wall_s']:.1f} s, "
                      f"{r['ms_per_applied']:.2f} ms per applied message (two replicas, wall)")
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
