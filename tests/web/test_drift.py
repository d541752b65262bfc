"""Drift per model version: reference vs current window, Evidently and the native score."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from edgefleet.cloud import drift
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import LatencyStats, ModelRef, Telemetry

from ..signed_reports.keys import feed_telemetry  # telemetry counts only when its device signed it

REF = ModelRef(name="m", version="1", digest="a" * 64)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _feed(c: Controller, n: int, start: int, hist: list[int], classes: dict[str, int]) -> None:
    for i in range(start, start + n):
        end = T0 + timedelta(seconds=10 * i)
        feed_telemetry(c, Telemetry(device_id=f"d{i % 2}", period_start=end - timedelta(seconds=10), period_end=end,
                                  control=REF, frames=sum(classes.values()), latency_ms=LatencyStats(p99=1.0),
                                  class_counts=classes, confidence_histogram=hist))


STEADY_H, STEADY_C = [0, 0, 0, 1, 1, 2, 3, 5, 18, 70], {"a": 50, "b": 30, "c": 20}
SHIFT_H, SHIFT_C = [0, 0, 5, 10, 15, 15, 15, 10, 10, 20], {"a": 20, "b": 30, "c": 50}


@pytest.fixture
def controller(tmp_path):  # type: ignore[no-untyped-def]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    yield c
    c.engine.dispose()


@pytest.mark.parametrize("engine", ["native", "evidently"])
def test_same_distribution_is_not_drift(controller, engine) -> None:  # type: ignore[no-untyped-def]
    _feed(controller, 20, 0, STEADY_H, STEADY_C)
    cfg = drift.DriftConfig(reference_periods=10, current_periods=10, engine=engine)
    with controller.session() as s:
        res = drift.drift_score(s, "m:1", T0 + timedelta(hours=1), config=cfg)
    assert res.status == "ok" and res.engine == engine
    assert res.score is not None and res.score < 0.05 and res.drifted is False
    assert res.reference.periods == 10 and res.current.periods == 10


@pytest.mark.parametrize("engine", ["native", "evidently"])
def test_shifted_confidence_and_classes_are_drift(controller, engine) -> None:  # type: ignore[no-untyped-def]
    _feed(controller, 10, 0, STEADY_H, STEADY_C)
    _feed(controller, 10, 10, SHIFT_H, SHIFT_C)
    cfg = drift.DriftConfig(reference_periods=10, current_periods=10, engine=engine)
    with controller.session() as s:
        res = drift.drift_score(s, REF, T0 + timedelta(hours=1), config=cfg)
    assert res.drifted is True and res.score is not None and 0.1 <= res.score <= 0.84
    assert {c.column for c in res.columns} == {"confidence", "predicted_class"}
    assert res.score == max(c.score for c in res.columns)


def test_native_and_evidently_agree_closely(controller) -> None:  # type: ignore[no-untyped-def]
    _feed(controller, 10, 0, STEADY_H, STEADY_C)
    _feed(controller, 10, 10, SHIFT_H, SHIFT_C)
    with controller.session() as s:
        scores = {e: {c.column: c.score for c in drift.drift_score(
            s, REF, T0 + timedelta(hours=1), config=drift.DriftConfig(reference_periods=10, engine=e)).columns}
            for e in ("native", "evidently")}
    assert abs(scores["native"]["predicted_class"] - scores["evidently"]["predicted_class"]) < 0.01
    assert abs(scores["native"]["confidence"] - scores["evidently"]["confidence"]) < 0.08


def test_too_little_data_is_reported_not_scored(controller) -> None:  # type: ignore[no-untyped-def]
    _feed(controller, 3, 0, STEADY_H, {"a": 10})
    with controller.session() as s:
        res = drift.drift_score(s, REF, T0 + timedelta(hours=1), config=drift.DriftConfig(reference_periods=2))
    assert res.status == "insufficient_data" and res.score is None and res.drifted is None
    assert "fewer than 100 frames" in res.reason


def test_windows_never_overlap_and_an_explicit_reference_window_is_used(controller) -> None:  # type: ignore[no-untyped-def]
    _feed(controller, 6, 0, STEADY_H, STEADY_C)
    with controller.session() as s:
        ref, cur = drift.windows_for(s, REF, T0 + timedelta(hours=1), config=drift.DriftConfig(reference_periods=4, current_periods=10))
        assert (ref.periods, cur.periods) == (4, 2)
        cfg = drift.DriftConfig(reference_start=T0 + timedelta(seconds=15), reference_end=T0 + timedelta(seconds=35), current_periods=2)
        ref, cur = drift.windows_for(s, REF, T0 + timedelta(hours=1), config=cfg)
        assert (ref.periods, cur.periods) == (2, 2) and ref.start == T0 + timedelta(seconds=10)


@pytest.mark.parametrize(("counts", "n"), [([5, 0, 3, 2], 5), ([1, 1, 1], 2), ([0, 0], 4), ([7], 3)])
def test_scaling_keeps_the_total_and_the_proportions(counts: list[int], n: int) -> None:
    out = drift.scale_counts(counts, n)
    assert sum(out) == (n if sum(counts) else 0)
    assert all(abs(o - c * n / sum(counts)) < 1 for o, c in zip(out, counts)) if sum(counts) else True


def test_reconstructed_samples_follow_the_histogram_and_classes() -> None:
    w = drift.WindowInfo(confidence_histogram=[0, 0, 0, 0, 0, 0, 0, 0, 1, 3], class_counts={"x": 3, "y": 1}, frames=4)
    df = drift.samples_frame(w, 1000)
    assert len(df) == 4
    assert sorted(df["predicted_class"]) == ["x", "x", "x", "y"]
    assert ((df["confidence"] >= 0.8) & (df["confidence"] <= 1.0)).all()
    assert (df["confidence"] >= 0.9).sum() == 3


def test_drift_api_returns_the_result_as_json(live) -> None:  # type: ignore[no-untyped-def]
    h = {"Authorization": f"Bearer {live.tokens['viewer']}"}
    r = httpx.get(live.url + "/api/v1/models/digits/versions/1.0/drift", headers=h, params={"engine": "native"})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "digits:1.0" and body["status"] == "ok" and body["engine"] == "native"
    assert body["drifted"] is True  # the dock cameras' shift in the seeded fleet
    assert httpx.get(live.url + "/api/v1/models/nope/versions/1/drift", headers=h).status_code == 404


def test_evidently_report_is_served_inside_a_locked_down_page(live) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(live.url + "/ui/models/digits/1.0/drift/report", cookies={"edgefleet_token": live.tokens["viewer"]})
    assert r.status_code == 200 and "Jensen-Shannon" in r.text
    assert "connect-src 'none'" in r.headers["content-security-policy"]
