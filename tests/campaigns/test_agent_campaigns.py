"""The device side of campaigns: real ONNX control model on the digits camera, real outbox,
real prediction socket; frames driven one by one on the test thread (deterministic)."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.edge_agent.app_output import Address, PredictionServer, context_line
from edgefleet.edge_agent.campaigns import Campaigns, cosine_distance, embedding
from edgefleet.edge_agent.capture import Capture
from edgefleet.edge_agent.outbox import Outbox
from edgefleet.edge_agent.runner import ModelRunner
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import CapturePolicy, ModelRef
from edgefleet.protocols.campaigns import CampaignSpec, Like
from edgefleet.protocols.conditions import parse_condition
from tests.conftest import wait_until

QUIET = CapturePolicy(low_confidence=False, disagreement=False, pre_seconds=0.2, post_seconds=0.0)


def _runner(model: Any, tmp: Path) -> ModelRunner:
    m = model.manifest
    d = tmp / f"{m.name}-{m.version}"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(model.path, d / m.model_file)
    return ModelRunner.load(ModelRef(name=m.name, version=m.version, digest=hashlib.sha256(model.path.read_bytes()).hexdigest()), m, d)


def _spec(name: str, when: str | None = None, **kw: Any) -> CampaignSpec:
    cond = parse_condition(when) if when else None
    return CampaignSpec(name=name, condition=cond.to_json() if cond else None, condition_text=when or "",
                        **{"per_device_quota": 1000, "max_per_minute": 6000, **kw})


def test_context_conditions_match_only_frames_with_that_context_and_it_is_stored(
        tmp_path: Path, digit_models: Any) -> None:
    control = _runner(digit_models[0], tmp_path)
    now = [1_000_000.0]
    outbox = Outbox(tmp_path / "outbox", max_bytes=64 * 1024**2, min_free_bytes=0)
    capture = Capture("cam-ctx", outbox, policy=QUIET, work_dir=tmp_path / "work", clock=lambda: now[0])
    campaigns = Campaigns(tmp_path, clock=lambda: now[0])
    campaigns.update([_spec("left-turns", "context.steering_deg < -20 and context.speed_kmh > 5", frames_only=True)])
    capture.campaigns = campaigns
    turning = set()
    source = SyntheticDigits(seed=4)
    for i, (_, frame) in zip(range(120), source.frames()):
        now[0] += 0.1
        if i % 10 < 3:  # the application says: left turn, on these frames
            campaigns.set_context({"steering_deg": -25, "speed_kmh": 12}, ts=now[0])
            turning.add(i)
        elif i % 10 < 6:
            campaigns.set_context({"steering_deg": 4, "speed_kmh": 40}, ts=now[0])
        # frames 6..9 of each ten carry no fresh context (older than its 2 s lifetime? no: 0.4 s) ...
        capture.push(now[0], frame)
        capture.observe(now[0], frame, control, control.predict(frame).prediction)
        capture.encode_pending()
    capture.encode_pending()
    events = [item.event for item in outbox.pending()]
    assert len(events) == len(turning) == 36
    assert all(e.campaign == "left-turns" and e.trigger == "campaign" for e in events)
    assert all(e.context == {"steering_deg": -25, "speed_kmh": 12} for e in events)
    outbox.close()


def test_like_captures_frames_near_the_chosen_one_and_not_others(tmp_path: Path, digit_models: Any) -> None:
    control = _runner(digit_models[0], tmp_path)
    source = SyntheticDigits(seed=7)
    stream = [(source.current_label, control.predict(frame).prediction) for _, (_, frame) in zip(range(600), source.frames())]
    ref_label, ref = next((lab, p) for lab, p in stream if lab == 3 and p.label == "3" and (p.score or 0) > 0.9)
    vector = embedding(ref)
    assert vector is not None
    campaigns = Campaigns(None)
    campaigns.update([_spec("more-threes", like=Like(vector=vector.tolist(), threshold=0.02, source_event="ev1"))])
    captured = [lab for i, (lab, p) in enumerate(stream) if campaigns.match(p, None, None, now=float(i))[0] is not None]
    others = [lab for lab, _ in stream if lab != ref_label]
    assert len(captured) >= 20 and len(others) > 400
    precision = sum(lab == ref_label for lab in captured) / len(captured)
    assert precision >= 0.95, (precision, captured)
    far = next(p for lab, p in stream if lab == 0 and p.label == "0")
    assert cosine_distance(embedding(far), vector) > 0.5  # type: ignore[arg-type]


def test_quota_budget_and_counts_survive_a_restart(tmp_path: Path, digit_models: Any) -> None:
    control = _runner(digit_models[0], tmp_path)
    frame = next(iter(SyntheticDigits(seed=1).frames()))[1]
    pred = control.predict(frame).prediction
    c = Campaigns(tmp_path)
    c.update([_spec("q", "confidence >= 0", per_device_quota=5, max_per_minute=3)])
    hits = [c.match(pred, None, None, now=float(t))[0] for t in range(10)]
    assert sum(h is not None for h in hits) == 3 and c.refused["q:per_minute"] == 7  # its own budget
    assert sum(c.match(pred, None, None, now=100.0 + t)[0] is not None for t in range(10)) == 2  # quota: 5
    assert c.refused["q:quota"] == 8
    again = Campaigns(tmp_path)  # the agent restarted
    again.update([_spec("q", "confidence >= 0", per_device_quota=5, max_per_minute=3)])
    assert again.counts() == {"q": 5} and again.match(pred, None, None, now=500.0)[0] is None
    again.update([])  # the campaign left the settings: over, and forgotten
    assert Campaigns(tmp_path).counts() == {}
    # the device's byte budget is the ceiling for campaigns too
    c.update([_spec("b", "confidence >= 0")])
    assert c.match(pred, None, None, now=1.0, bytes_left=False)[0] is None and c.refused["b:bytes_per_day"] == 1


def test_priority_picks_the_campaign_and_ends_at_stops_it(tmp_path: Path, digit_models: Any) -> None:
    from datetime import datetime, timezone

    control = _runner(digit_models[0], tmp_path)
    pred = control.predict(next(iter(SyntheticDigits(seed=2).frames()))[1]).prediction
    c = Campaigns(None)
    c.update([_spec("low", "confidence >= 0", priority=5), _spec("high", "confidence >= 0", priority=60,
                                                                  ends_at=datetime.fromtimestamp(50, timezone.utc))])
    assert c.match(pred, None, None, now=10.0)[0].name == "high"  # type: ignore[union-attr]
    assert c.match(pred, None, None, now=60.0)[0].name == "low"  # type: ignore[union-attr]


def test_context_arrives_on_the_prediction_socket_and_junk_is_counted(tmp_path: Path) -> None:
    campaigns = Campaigns(None)
    server = PredictionServer(Address("unix", path=tmp_path / "p.sock"))
    server.on_context = campaigns.set_context
    server.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as app:
            app.connect(str(tmp_path / "p.sock"))
            app.sendall(b"not json\n" + b'{"schema": "fleet.context/1", "context": {"bad key!": 1}}\n'
                        + b'{"schema": "other", "context": {}}\n' + b"[" * 5000 + b"\n")
            app.sendall(context_line({"steering_deg": -30, "road": "<script>x</script>"}))
            wait_until(lambda: campaigns.context() is not None, 10, message="context from the socket")
            assert campaigns.context() == {"steering_deg": -30, "road": "<script>x</script>"}
            client = server._clients[0]
            assert client.context_refused == 4
    finally:
        server.stop()


def test_frames_of_a_campaign_carry_a_bounded_event(tmp_path: Path, digit_models: Any) -> None:
    control = _runner(digit_models[0], tmp_path)
    pred = control.predict(next(iter(SyntheticDigits(seed=5).frames()))[1]).prediction
    from datetime import datetime, timezone

    from edgefleet.protocols import encode
    from edgefleet.shadow import Trigger, build_event

    ctx = {f"k{i}": "v" * 100 for i in range(8)}
    event = build_event(device_id="cam", event_id="e1", trigger=Trigger("campaign", 25), control=pred,
                        ts=datetime.now(timezone.utc), campaign="c", context=ctx)
    assert event.campaign == "c" and event.context == ctx
    assert np.isfinite(len(encode(event)))
