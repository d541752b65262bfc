"""Where webhook events come from: stale and offline devices, drift per model version,
captures per pair (batched) — each enqueued with its fact and delivered to a real receiver."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlmodel import select

from edgefleet.cloud import shadow_index
from edgefleet.cloud.devices import fleet, ingest, telemetry_store
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.tables import ModelVersion, SlotAssignment
from edgefleet.cloud.trust import freshness
from edgefleet.cloud.webhooks import WebhookOutbox
from edgefleet.cloud.webhooks.watchers import watch_drift
from edgefleet.protocols import Event, LatencyStats, ModelOutput, ModelRef, Status, Telemetry

from ..conftest import wait_until
from .receiver import Receiver

CONTROL = ModelRef(name="digits", version="1.0", digest="a" * 64)
CANDIDATE = ModelRef(name="digits", version="2.0", digest="b" * 64)


def test_a_device_marked_stale_enqueues_device_stale_in_the_same_transaction(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    now = datetime.now(timezone.utc)
    with c.session() as s:
        fleet.enrol(s, "lagger", "cpu-x86_64")
        d = fleet.get_device(s, "lagger")
        d.reported, d.reported_generation, d.desired_generation = {"slots": {}}, 0, 3
        d.lagging_since = now - timedelta(seconds=600)
        s.add(d)
        s.commit()
        assert freshness.mark_stale(s, now, 120.0) == ["lagger"]
        rows = s.exec(select(WebhookOutbox)).all()
        assert [(r.type, r.data["device"]) for r in rows] == [("device.stale", "lagger")]
        assert "reports generation 0, desired 3" in rows[0].data["reason"]
        assert freshness.mark_stale(s, now, 120.0) == []  # once per stale spell
        assert len(s.exec(select(WebhookOutbox)).all()) == 1
    c.engine.dispose()


def test_offline_devices_and_new_captures_reach_the_receiver_once(hook_stack) -> None:  # type: ignore[no-untyped-def]
    rx = Receiver().start()
    try:
        hook = hook_stack.client.add_webhook(rx.url, ["device.offline", "capture.new"])
        rx.secret = hook["secret"]
        hook_stack.client.enrol_device("gone-1", "cpu-x86_64", {"site": "a"})
        with hook_stack.controller.session() as s:
            ingest.apply_status(s, Status(device_id="gone-1", online=False),
                                now=datetime.now(timezone.utc) - timedelta(seconds=30))
        wait_until(lambda: rx.events("device.offline"), message="device.offline")
        off = rx.events("device.offline")[0]["data"]
        assert off["device"] == "gone-1" and off["offline_for_s"] >= 29 and off["tags"] == {"site": "a"}

        hook_stack.client.enrol_device("cam-c", "cpu-x86_64")
        wait_until(lambda: _watch(hook_stack, "capture:cursor") is not None, message="capture cursor set")
        now = datetime.now(timezone.utc)
        with hook_stack.controller.session() as s:
            for i in range(3):
                shadow_index.record_event(s, Event(
                    device_id="cam-c", event_id=f"e{i}", trigger="disagreement", ts=now,
                    control=ModelOutput(model=CONTROL, label="3", score=0.9, scores=[0.9, 0.1]),
                    candidate=ModelOutput(model=CANDIDATE, label="8", score=0.6, scores=[0.4, 0.6])), via="mqtt")
        wait_until(lambda: rx.events("capture.new"), message="capture.new")
        wait_until(lambda: _watch(hook_stack, "capture:cursor") not in (None, "0"), message="cursor moved")
        import time

        time.sleep(1.5)  # further batches: nothing new, nothing sent; still offline: not announced again
        captures = rx.events("capture.new")  # one batch, or two when the watcher ran between the inserts
        assert sum(c["data"]["count"] for c in captures) == 3, captures  # each capture announced once
        assert captures[0]["data"] | {"first": None, "last": None, "count": None} == {
            "control": "digits:1.0", "candidate": "digits:2.0", "count": None, "devices": 1,
            "first": None, "last": None, "review_url": "/ui/review"}
        assert len(rx.events("device.offline")) == 1
    finally:
        rx.stop()


def _watch(stack, key: str) -> str | None:  # type: ignore[no-untyped-def]
    from edgefleet.cloud.webhooks.worker import watch_value

    with stack.controller.session() as s:
        return watch_value(s, key)


def test_drift_over_the_threshold_is_announced_once_per_breach(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(tmp_path, env={})
    c = Controller(settings)
    c.migrate()
    t0 = datetime.now(timezone.utc) - timedelta(hours=2)
    steady_h, steady_c = [0, 0, 0, 1, 1, 2, 3, 5, 18, 70], {"a": 50, "b": 30, "c": 20}
    shift_h, shift_c = [0, 0, 5, 10, 15, 15, 15, 10, 10, 20], {"a": 20, "b": 30, "c": 50}
    with c.session() as s:
        fleet.enrol(s, "d0", "cpu-x86_64")
        mv = ModelVersion(name="digits", version="1.0", digest="a" * 64, size=1)
        s.add(mv)
        s.commit()
        s.add(SlotAssignment(device_id="d0", slot="control", model_version_id=mv.id or 0))
        s.commit()

        def feed(start: int, n: int, hist: list[int], classes: dict[str, int]) -> None:
            for i in range(start, start + n):
                end = t0 + timedelta(seconds=10 * i)
                telemetry_store.record_telemetry(s, Telemetry(
                    device_id="d0", period_start=end - timedelta(seconds=10), period_end=end, control=CONTROL,
                    frames=sum(classes.values()), latency_ms=LatencyStats(p99=1.0), class_counts=classes,
                    confidence_histogram=hist))

        feed(0, 30, steady_h, steady_c)
        feed(30, 30, steady_h, steady_c)
        now = datetime.now(timezone.utc)
        assert watch_drift(s, settings, now) == []  # steady: no event
        feed(60, 30, shift_h, shift_c)
        assert watch_drift(s, settings, now) == ["digits:1.0"]
        s.commit()
        assert watch_drift(s, settings, now) == []  # still over: not announced again
        rows = s.exec(select(WebhookOutbox).where(WebhookOutbox.type == "drift.breach")).all()
        assert len(rows) == 1 and rows[0].data["model"] == "digits:1.0"
        assert rows[0].data["score"] >= rows[0].data["threshold"] == settings.webhook_drift_threshold
    c.engine.dispose()
