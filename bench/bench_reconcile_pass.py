"""Benchmark (issue 14): no pass touches the whole fleet when nothing changed.

    python bench/bench_reconcile_pass.py                       # passes at 100 and 10,000 devices, re-publish at 10,000
    python bench/bench_reconcile_pass.py --republish 2000      # a smaller re-publish
    python bench/bench_reconcile_pass.py --republish 100000    # the large one (minutes: signing every device first)
    python bench/bench_reconcile_pass.py --no-republish

1. **Quiet pass.** A SQLite controller database (real migrations) is seeded directly (bulk
   ``insert``) with N enrolled online devices running model 2.0, and one rollout of 2.0 to
   all of them, soaking (every member healthy, an hour of soak left). One full pass builds
   the reconciler's view; then CPU (``time.process_time``) of the passes that follow, in
   which nothing changed. Printed: CPU per quiet pass at N=10,000 ÷ at N=100 (goal ≈ 1:
   O(changed), not O(fleet)) and, for scale, the full pass at 10,000 ÷ a quiet one.
2. **Re-publish after a broker lost its state.** The same database grows to ``--republish``
   devices with real director metadata (a controller signs each once, unpaced); then a
   fresh mosquitto takes the old one's port (its store wiped: retained desired gone). The
   controller reconnects with a new session and re-publishes every device, paced at
   ``--rate``/s, in the background; a subscriber counts distinct devices whose retained
   desired arrived. Meanwhile a publisher offers ``--ingest-rate`` status messages a second
   and the controller's applied rate is measured before and during. Printed: seconds until
   every device had desired again, the walk's messages/s, ingest during ÷ before. Then the
   persistent case: the same mosquitto restarted with its store — the session resumes and
   nothing is re-published (retained desired is still there).

Everything runs on loopback; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, select

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.rollout.model import RolloutState
from edgefleet.cloud.rollout.reconciler import Reconciler
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember
from edgefleet.cloud.tables import Device, ModelVersion, SlotAssignment

DIGEST = "d2" * 32
OLD = "d1" * 32
BATCH = 5_000


def seed_fleet(engine: Any, n: int, *, start: int = 0, mv_id: int, rollout_id: str | None, digest: str,
               version: str) -> None:
    """n enrolled, online devices on ``digest`` (healthy), assigned to it, members of the rollout."""
    now = time.time()
    at = datetime.now(timezone.utc)
    ref = {"name": "digits", "version": version, "digest": digest}
    with Session(engine) as s:
        for i in range(start, start + n, BATCH):
            ids = [f"dev-{k:06d}" for k in range(i, min(i + BATCH, start + n))]
            s.execute(insert(Device), [dict(
                id=d, hardware_id="jetson-orin-nano", tags={"site": f"s{k % 7}"}, online=True, last_seen=at,
                desired_generation=1, reported_generation=1, created_at=at, credentials_epoch=0,
                reported={"slots": {"control": {"installed": ref, "target": ref, "phase": "healthy"}}},
                reported_at=at, director_generation=0, director_version=0, agent_version="bench")
                for k, d in enumerate(ids, start=i)])
            s.execute(insert(SlotAssignment), [dict(device_id=d, slot="control", model_version_id=mv_id,
                                                    rollout_id=rollout_id) for d in ids])
            if rollout_id is not None:
                s.execute(insert(RolloutMember), [dict(
                    rollout_id=rollout_id, device_id=d, wave=0, assigned_at=now - 600, dispatched_at=now - 590,
                    previous={"name": "digits", "version": "1.0", "digest": OLD}, seen_phase="healthy",
                    seen_target=digest, phase_since=now - 500, frames=1000, agreement_frames=0) for d in ids])
        s.commit()


def quiet_db(path: Path, n: int) -> Any:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    now = time.time()
    with Session(engine) as s:
        for version, digest in (("1.0", OLD), ("2.0", DIGEST)):
            s.add(ModelVersion(name="digits", version=version, digest=digest, size=1, manifest={}))
        s.commit()
        mv = s.exec(select(ModelVersion).where(ModelVersion.digest == DIGEST)).one()
        state = RolloutState(rollout_id="ro-bench", state="soaking", current_wave=0, started_at=now - 600,
                             wave_started_at=now - 600, soak_started_at=now - 60)
        s.add(Rollout(id="ro-bench", model_version_id=mv.id or 0, model_name="digits", model_version="2.0",
                      digest=DIGEST, slot="control", select="all", waves="100", soak="1h", gates=["failure<=0.02"],
                      on_breach="rollback", device_timeout="30m", state="soaking",
                      state_json=state.model_dump_json(), created_at=now - 600, updated_at=now - 60))
        s.commit()
        mv_id = mv.id or 0
    seed_fleet(engine, n, mv_id=mv_id, rollout_id="ro-bench", digest=DIGEST, version="2.0")
    return engine


def _touch(engine: Any, ids: list[str], round_: int) -> None:
    """Change a planner column of ``ids`` as batched ingest does (a Core update, then the mark)."""
    from sqlalchemy import bindparam, update

    from edgefleet.cloud.rollout import dirty

    t = Device.__table__  # type: ignore[attr-defined]
    with Session(engine) as s:
        s.connection().execute(update(t).where(t.c.id == bindparam("k")).values(tags=bindparam("v", type_=t.c.tags.type)),
                               [{"k": d, "v": {"site": "s0", "round": str(round_)}} for d in ids])
        dirty.mark(s, ids)
        s.commit()


def bench_changed(engine: Any, r: Reconciler, n: int, changed: int, passes: int, t: float) -> tuple[float, float]:
    """Mean CPU of a pass after ``changed`` devices moved: reading only those (the reconciler
    as it runs) and, in the same run, reading every device again (the baseline), seconds."""
    ids = [f"dev-{k:06d}" for k in range(0, n, max(1, n // changed))][:changed]
    out = []
    for fraction, kind in ((1.0, "read_changed"), (-1.0, "read_full")):
        r.refresh_fraction = fraction
        r.full_every_s = 1e9
        total = 0.0
        for k in range(passes):
            _touch(engine, ids, k + (0 if fraction > 0 else passes))
            c0 = time.process_time()
            res = r.run_once(t + k * 0.01)
            total += time.process_time() - c0
            assert getattr(res, kind) == 1, res
        out.append(total / passes)
    return out[0], out[1]


def bench_quiet(tmp: Path, n: int, passes: int) -> tuple[float, float, float]:
    """(CPU of the first, full pass; mean CPU of the quiet passes after it; CPU of a full pass
    forced after them — what a pass costs once the reconciler has read the fleet before), seconds.
    Then, at ``n`` ≥ 1,000, the pass after 1 % of the devices changed (``bench_changed``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    engine = quiet_db(tmp / f"quiet-{n}.db", n)
    r = Reconciler(engine, None, holder="bench", lease_ttl_s=3600)
    t = time.time()
    c0 = time.process_time()
    first = r.run_once(t)
    full = time.process_time() - c0
    assert first.rollouts == 1, first
    settle = r.run_once(t + 0.1)  # the first pass's own marks (phases seen) cleared
    if settle.skipped != 1:
        settle = r.run_once(t + 0.2)
    assert settle.skipped == 1, f"the rollout never became quiet: {settle}"
    c0 = time.process_time()
    for k in range(passes):
        res = r.run_once(t + 1 + k * 0.01)
        assert res.skipped == 1 and res.rollouts == 0, res
    quiet = (time.process_time() - c0) / passes
    r.full_every_s = 0.0  # the next pass is a full one
    c0 = time.process_time()
    again = r.run_once(t + 2)
    repeat = time.process_time() - c0
    assert again.rollouts == 1, again
    if n >= 1000:
        k = max(1, n // 100)
        quick, slow = bench_changed(engine, r, n, k, max(3, passes // 10), t + 3)
        print(f"pass after {k} of {n} devices changed: {quick * 1e3:.0f} ms reading only those, {slow * 1e3:.0f} ms "
              f"reading every device again (same run); ratio {quick / slow:.2f}", flush=True)
    engine.dispose()
    return full, quiet, repeat


# ----- re-publish ----------------------------------------------------------------------------------


class Watch:
    """Distinct devices whose (retained) desired arrived, and when the last new one did."""

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.seen: set[str] = set()
        self.last_new = 0.0
        self._lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(username, password)
        self.c.on_message = self._on
        self.c.connect(host, port)
        self.c.loop_start()
        self.c.subscribe("fleet/v1/devices/+/desired", qos=1)

    def _on(self, _c: Any, _u: Any, m: Any) -> None:
        if not m.payload:
            return
        d = m.topic.split("/")[3]
        with self._lock:
            if d not in self.seen:
                self.seen.add(d)
                self.last_new = time.monotonic()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Flood:
    """Offers ``rate`` status messages a second (the controller's account, enrolled ids)."""

    def __init__(self, host: str, port: int, username: str, password: str, ids: list[str], rate: float):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edgefleet.protocols import Status
        from edgefleet.protocols.messages import encode

        self.payloads = [(f"fleet/v1/devices/{d}/status", encode(Status(device_id=d, online=True,
                                                                        hardware_id="jetson-orin-nano")))
                         for d in ids]
        self.rate, self._stop = rate, threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-flood", protocol=mqtt.MQTTv5)
        self.c.username_pw_set(username, password)
        self.c.connect(host, port)
        self.c.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        start, k = time.monotonic(), 0
        while not self._stop.is_set():
            topic, payload = self.payloads[k % len(self.payloads)]
            if self.c.is_connected():
                self.c.publish(topic, payload, qos=1)
            k += 1
            delay = start + k / self.rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.c.loop_stop()
        self.c.disconnect()


def applied(c: Any) -> int:
    return int(c.bridge.counters[("status", "ok")]) if c.bridge is not None else 0


def rate_over(c: Any, seconds: float) -> float:
    a0, t0 = applied(c), time.monotonic()
    time.sleep(seconds)
    return (applied(c) - a0) / (time.monotonic() - t0)


def bench_republish(tmp: Path, n: int, rate: float, ingest_rate: float, limit_s: float) -> None:
    from edgefleet.cloud import catalog
    from edgefleet.cloud.broker import MosquittoBroker
    from edgefleet.cloud.demo.train import train_digit_models
    from edgefleet.cloud.runtime import Controller
    from edgefleet.cloud.settings import load_settings

    if not MosquittoBroker.available():
        print("re-publish: skipped (mosquitto is not installed)")
        return
    store_dir, auth = tmp / "mosquitto", tmp / "broker-auth"
    broker = MosquittoBroker(data_dir=store_dir, auth_dir=auth)
    broker.start()
    settings = load_settings(tmp / "ctl", env={}, database_url=f"sqlite:///{tmp / 'republish.db'}",
                             mqtt_port=broker.port, mqtt_protocol="5", broker_auth_dir=auth,
                             reconcile_interval_s=2.0, republish_rate_per_s=rate, telemetry_period_s=60.0)
    c = Controller(settings)
    assert c.broker_auth is not None
    c.broker_auth.set_reload(broker.reload)
    c.migrate()
    models = train_digit_models(tmp / "models")
    with c.session() as s:
        m = models[0].manifest
        mv, _created = catalog.push_model(s, c.store, models[0].path.read_bytes(), name=m.name, version=m.version,
                                manifest=m.model_dump(mode="json", by_alias=True))
        mv_id, digest, version = mv.id or 0, mv.digest, mv.version
    seed_fleet(c.engine, n, mv_id=mv_id, rollout_id=None, digest=digest, version=version)
    c.sync_broker_auth()
    t0 = time.perf_counter()
    c.republish_all()  # director metadata for every device, signed once (no bridge yet: nothing sent)
    print(f"re-publish: {n} devices signed once (before the controller connects) in {time.perf_counter() - t0:.1f}s")
    c.start()
    bridge = c.bridge
    assert bridge is not None
    user, password = c.mqtt_credentials()
    deadline = time.monotonic() + limit_s
    while not bridge.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    first = c.republisher.last
    while first is not None and first.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first connection (a new session) walked the fleet
    ids = [f"dev-{k:06d}" for k in range(min(n, 500))]
    flood = Flood(broker.host, broker.port, user, password, ids, ingest_rate)
    try:
        before = rate_over(c, 5.0)
        # the broker loses everything: a fresh one on the same port (store wiped)
        broker.stop()
        for p in store_dir.glob("*.db"):
            p.unlink()
        broker.start()
        t_restart = time.monotonic()
        while not bridge.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        watch = Watch(broker.host, broker.port, user, password, "bench-watch")
        a0, w0 = applied(c), time.monotonic()
        while len(watch.seen) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        during = (applied(c) - a0) / max(time.monotonic() - w0, 1e-9)
        got = len(watch.seen)
        done_s = watch.last_new - t_restart
        walk = c.republisher.last
        watch.close()
        sent_rate = (walk.sent / (walk.finished_at - walk.started_at)) if walk and walk.finished_at else float("nan")
        print(f"re-publish after a fresh broker: {got}/{n} devices had desired again after {done_s:.1f}s "
              f"(walk at {sent_rate:.0f}/s, limit {rate:g}/s; expected ≈ {n / rate:.1f}s)")
        print(f"ingest (status, offered {ingest_rate:g}/s): {before:.0f}/s before, {during:.0f}/s during; "
              f"during ÷ before = {during / before if before else float('nan'):.2f}")
        # the persistent case: same store; the session resumes, nothing is re-published
        walk_before = c.republisher.last
        broker.stop()
        broker.start()
        t_restart = time.monotonic()
        while not bridge.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        watch = Watch(broker.host, broker.port, user, password, "bench-watch-2")
        while len(watch.seen) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"persistent broker restarted: session resumed={bridge.session_present}, re-published="
              f"{'no' if c.republisher.last is walk_before else 'yes'}, {len(watch.seen)}/{n} retained desired "
              f"seen by a newcomer {watch.last_new - t_restart:.1f}s after the restart")
        watch.close()
    finally:
        flood.close()
        c.stop()
        broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=100)
    p.add_argument("--large", type=int, default=10_000)
    p.add_argument("--passes", type=int, default=50)
    p.add_argument("--republish", type=int, default=10_000, help="devices in the re-publish phase (100000: the large one)")
    p.add_argument("--no-republish", action="store_true")
    p.add_argument("--rate", type=float, default=1000.0, help="re-publish messages per second")
    p.add_argument("--ingest-rate", type=float, default=200.0, help="status messages offered per second")
    p.add_argument("--limit", type=float, default=600.0, help="seconds at most for the re-publish phase")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-bench-reconcile-"))
    try:
        bench_quiet(tmp / "warm", args.small, 5)  # imports, caches, the first statements compiled
        full_s, quiet_s, repeat_s = bench_quiet(tmp, args.small, args.passes)
        full_l, quiet_l, repeat_l = bench_quiet(tmp, args.large, args.passes)
        print(f"quiet pass CPU: {quiet_s * 1e3:.2f} ms at {args.small} devices, {quiet_l * 1e3:.2f} ms at "
              f"{args.large}; ratio {args.large}÷{args.small} = {quiet_l / quiet_s:.2f} (goal ≈ 1)")
        print(f"full pass CPU: {full_s * 1e3:.1f} ms at {args.small}, {full_l * 1e3:.0f} ms at {args.large}; "
              f"full ÷ quiet at {args.large} = {full_l / quiet_l:.0f}")
        print(f"repeated full pass CPU (the fleet read before): {repeat_s * 1e3:.1f} ms at {args.small}, "
              f"{repeat_l * 1e3:.0f} ms at {args.large}; ÷ the first full pass at {args.large} = {repeat_l / full_l:.2f}")

        if not args.no_republish:
            bench_republish(tmp, args.republish, args.rate, args.ingest_rate, args.limit)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
