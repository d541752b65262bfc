"""The controller's shadow index on a real SQLite database (migrations applied)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlmodel import Session

from edgefleet.cloud import shadow_index as si
from edgefleet.cloud.errors import BadRequest
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.uploads import StoredClip
from edgefleet.protocols import Event, ModelOutput, ModelRef, ShadowStats, Telemetry

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CTL = ModelRef(name="digits", version="1.0", digest="a" * 64)
CAND = ModelRef(name="digits", version="2.0", digest="b" * 64)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    with c.session() as s:
        yield s
    c.engine.dispose()


def _event(eid: str, device: str = "cam-1", label: str = "8", cand: str = "3", minutes: int = 0) -> Event:
    return Event(device_id=device, event_id=eid, ts=T0 + timedelta(minutes=minutes), trigger="disagreement",
                 priority=40, control=ModelOutput(model=CTL, label=label, score=0.9),
                 candidate=ModelOutput(model=CAND, label=cand, score=0.7), clip_id=eid)


def _telemetry(device: str, frames: int, disagreements: int, confusion: dict) -> Telemetry:
    stats = ShadowStats(candidate=CAND, frames=frames, disagreements=disagreements,
                        agreement=1 - disagreements / frames, per_class_disagreements={"8": disagreements},
                        confusion=confusion)
    return Telemetry(device_id=device, period_start=T0, period_end=T0, control=CTL, frames=frames, shadow=stats)


def test_an_event_arriving_by_mqtt_and_by_upload_is_one_row_with_its_clip(session: Session) -> None:
    ev = _event("e1")
    si.record_event(session, ev, via="mqtt")
    si.record_event(session, ev, via="mqtt")  # QoS 1 may deliver twice
    stored = StoredClip(clip_id="c1", device_id="cam-1", event=ev.model_copy(update={"clip_id": "c1"}),
                        clip_digest="c" * 64, clip_size=100, clip_content_type="video/webm",
                        keyframe_digest="d" * 64, keyframe_size=10, received_at=T0, upload_id="u1")
    si.record_clip(session, stored)
    si.record_clip(session, stored)  # the upload store may call twice: upsert
    rows = si.list_events(session)
    assert len(rows) == 1 and rows[0].clip_id == "c1" and rows[0].via_mqtt and rows[0].via_upload
    assert si.get_clip(session, "c1").event_id == "e1"
    assert si.clips_per_device(session) == {"cam-1": 1}
    # An evicted clip's marker keeps the event, without a clip.
    marker = StoredClip(clip_id="c2", device_id="cam-1", event=_event("e2").model_copy(update={"clip_id": None}),
                        clip_digest=None, clip_size=0, clip_content_type=None, keyframe_digest=None,
                        keyframe_size=0, received_at=T0, upload_id="u2", clip_evicted=True)
    assert si.record_clip(session, marker) is None
    e2 = si.list_events(session, has_clip=False)
    assert [e.event_id for e in e2] == ["e2"] and e2[0].clip_evicted


def test_pair_statistics_fold_telemetry_periods_per_device_and_feed_the_rollout_gate(session: Session) -> None:
    for _ in range(3):
        si.record_pair_stats(session, _telemetry("cam-1", 100, 10, {"8": {"8": 90, "3": 10}}))
    si.record_pair_stats(session, _telemetry("cam-2", 100, 0, {"1": {"1": 100}}))
    agreement, frames = si.pair_agreement(session, "digits:1.0", "digits:2.0")
    assert frames == 400 and agreement == pytest.approx(1 - 30 / 400)
    assert si.pair_agreement(session, "digits:1.0", "digits:2.0", ["cam-2"]) == (1.0, 100)
    assert si.pair_agreement(session, "digits:1.0", "digits:9.9") == (None, 0)
    [pair] = si.list_pairs(session)
    assert (pair.control, pair.candidate, pair.devices, pair.frames, pair.disagreements) == (
        "digits:1.0", "digits:2.0", 2, 400, 30)
    detail = si.pair_detail(session, "digits:1.0", "digits:2.0")
    assert detail is not None
    assert detail["confusion"] == {"8": {"8": 270, "3": 30}, "1": {"1": 100}}
    assert detail["per_class"]["8"] == {"compared": 300, "disagreements": 30, "rate": 0.1}
    assert {d["device_id"]: d["periods"] for d in detail["devices"]} == {"cam-1": 3, "cam-2": 1}


def test_events_filter_by_pair_class_device_trigger_and_time(session: Session) -> None:
    si.record_event(session, _event("a", "cam-1", "8", "3", minutes=0))
    si.record_event(session, _event("b", "cam-2", "8", "1", minutes=5))
    si.record_event(session, _event("c", "cam-2", "4", "9", minutes=10))
    ids = lambda **kw: [e.event_id for e in si.list_events(session, **kw)]  # noqa: E731
    assert ids() == ["c", "b", "a"]
    assert ids(label="8") == ["b", "a"] and ids(label="9") == ["c"]
    assert ids(device_id="cam-2", since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=6)) == ["b"]
    assert ids(control="digits:1.0", candidate="digits:2.0", trigger="disagreement", limit=1) == ["c"]
    assert ids(trigger="low_confidence") == []
    assert si.parse_pair("digits:1.0,digits:2.0") == si.parse_pair("digits:1.0:digits:2.0") == ("digits:1.0", "digits:2.0")
    with pytest.raises(BadRequest):
        si.parse_pair("digits")
