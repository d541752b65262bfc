"""The telemetry history the controller keeps: one row per period, through its real handler."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from edgefleet.cloud.devices import telemetry_store
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import LatencyStats, ModelRef, ShadowStats, Telemetry

from ..signed_reports.keys import feed_telemetry  # telemetry counts only when its device signed it

CONTROL = ModelRef(name="m", version="1", digest="a" * 64)
CANDIDATE = ModelRef(name="m", version="2", digest="b" * 64)


def _msg(device: str, end: datetime, p99: float, agreement: float | None = None) -> Telemetry:
    shadow = None
    if agreement is not None:
        shadow = ShadowStats(candidate=CANDIDATE, frames=100, disagreements=round(100 * (1 - agreement)),
                             agreement=agreement, latency_ms=LatencyStats(p99=p99 * 2))
    return Telemetry(device_id=device, period_start=end - timedelta(seconds=10), period_end=end, control=CONTROL,
                     frames=100, fps=10.0, latency_ms=LatencyStats(p99=p99), class_counts={"a": 60, "b": 40},
                     confidence_histogram=[0] * 8 + [30, 70], shadow=shadow)


def test_each_telemetry_message_appends_one_period_and_keeps_the_latest_on_the_device(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(5):
        feed_telemetry(c, _msg("d1", t0 + timedelta(seconds=10 * i), p99=1.0 + i, agreement=0.9))
    feed_telemetry(c, _msg("d2", t0, p99=9.0))
    with c.session() as s:
        series = telemetry_store.device_series(s, ["d1", "d2"], limit=3)
        assert [p.latency_p99 for p in series["d1"]] == [3.0, 4.0, 5.0]  # the newest three, oldest first
        assert [p.agreement for p in series["d2"]] == [None]
        row = series["d1"][-1]
        assert (row.control_name, row.control_version, row.candidate_version) == ("m", "1", "2")
        assert row.confidence_histogram[-1] == 70 and row.class_counts == {"a": 60, "b": 40}
        from edgefleet.cloud.devices.fleet import get_device

        assert get_device(s, "d1").telemetry["latency_ms"]["p99"] == 5.0
    c.engine.dispose()


def test_version_series_buckets_periods_and_weights_agreement_by_frames(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    feed_telemetry(c, _msg("d1", t0 + timedelta(seconds=5), p99=1.0, agreement=1.0))
    feed_telemetry(c, _msg("d2", t0 + timedelta(seconds=20), p99=3.0, agreement=0.8))
    feed_telemetry(c, _msg("d1", t0 + timedelta(seconds=70), p99=5.0, agreement=0.5))
    with c.session() as s:
        ctl = telemetry_store.version_series(s, "m", "1", role="control", bucket=timedelta(minutes=1))
        assert [(p.periods, p.latency_p99) for p in ctl] == [(2, 2.0), (1, 5.0)]
        assert abs(ctl[0].agreement - 0.9) < 1e-9
        cand = telemetry_store.version_series(s, "m", "2", role="shadow", bucket=timedelta(minutes=1))
        assert [p.latency_p99 for p in cand] == [4.0, 10.0]
        assert telemetry_store.version_series(s, "m", "9") == []
        assert telemetry_store.prune(s, t0 + timedelta(seconds=30)) == 2
        assert len(telemetry_store.control_periods(s, "m", "1")) == 1
    c.engine.dispose()
