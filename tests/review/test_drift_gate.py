"""The rollout gate ``drift<=THRESHOLD`` reaches a figure: telemetry through the controller's
real ingest path → per-device drift of the rollout's model (``cloud.drift.drift_score``) in
the reconciler's observations → the wave's mean → the gate's verdict."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from edgefleet.cloud import catalog
from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.rollout import evaluate_gates, parse_gates, rollout_status, store
from edgefleet.cloud.rollout.service import RolloutCreate, get_row, start_rollout
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import LatencyStats, ModelRef, Status, Telemetry

from ..signed_reports.keys import feed_telemetry  # telemetry counts only when its device signed it

LABELS = [str(i) for i in range(10)]


def _period(device: str, model: ModelRef, end: datetime, rng: random.Random, shifted: bool) -> Telemetry:
    weights = [1.0] * 10
    if shifted:
        weights[8] = 8.0
    counts = dict.fromkeys(LABELS, 0)
    for _ in range(150):
        counts[rng.choices(LABELS, weights)[0]] += 1
    hist = [0] * 10
    for _ in range(150):
        hist[rng.randint(3, 6) if shifted and rng.random() < 0.5 else 9] += 1
    return Telemetry(device_id=device, period_start=end - timedelta(seconds=10), period_end=end, control=model,
                     frames=150, fps=15.0, latency_ms=LatencyStats(p50=1, p95=1.5, p99=2, mean=1, max=3),
                     class_counts=counts, confidence_histogram=hist)


def test_drift_gate_gets_each_devices_score_and_judges_the_waves_mean(tmp_path: Path, digit_models) -> None:  # type: ignore[no-untyped-def]
    assert [str(g) for g in parse_gates("drift<=0.3")] == ["drift<=0.3"]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    with c.session() as s:
        for model in digit_models:
            m = model.manifest
            catalog.push_model(s, c.store, model.path.read_bytes(), name=m.name, version=m.version,
                               manifest=m.model_dump(mode="json", by_alias=True))
        for d in ("cam-steady", "cam-shifted"):
            fleet.enrol_device(s, d, "cpu-x86_64", {"site": "lab"})
            ingest.apply_status(s, Status(device_id=d, online=True, hardware_id="cpu-x86_64"))
        mv = catalog.get_version(s, "digits:2.0")
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1h",
                                             gates=["drift<=0.3"]), time.time()).id
    c.reconcile_once()
    model = ModelRef(name=mv.name, version=mv.version, digest=mv.digest)
    rng = random.Random(3)
    now = datetime.now(timezone.utc)
    for k in range(60):
        end = now - timedelta(seconds=10 * (60 - k))
        feed_telemetry(c, _period("cam-steady", model, end, rng, shifted=False))
        feed_telemetry(c, _period("cam-shifted", model, end, rng, shifted=k >= 30))
    with c.session() as s:
        row = get_row(s, rid)
        obs = {o.device_id: o for o in store.observations(s, row)}
        steady, shifted = obs["cam-steady"].drift, obs["cam-shifted"].drift
        assert steady is not None and shifted is not None
        assert steady < 0.1 < 0.3 < shifted
        st = rollout_status(store.spec_of(row), store.state_of(row), obs.values(), time.time())
    [wave] = st.waves
    assert wave.metrics.value("drift") == (steady + shifted) / 2
    [result] = evaluate_gates(parse_gates("drift<=0.3"), wave.metrics)
    assert result.value == wave.metrics.value("drift")
    assert result.status == ("passed" if result.value <= 0.3 else "failed")
    assert "over 2 devices" in result.reason
    c.engine.dispose()
