"""Sidecar signals as frame context in capture: real ONNX control model on the digits camera,
real outbox, frames driven one by one on the test thread against a test clock (deterministic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefleet.edge_agent.campaigns import Campaigns
from edgefleet.edge_agent.capture import Capture
from edgefleet.edge_agent.outbox import Outbox
from edgefleet.edge_agent.signal_source import SignalAddress, SignalSource
from edgefleet.edge_agent.signals import SignalTable
from edgefleet.edge_agent.sources import SyntheticDigits
from tests.campaigns.test_agent_campaigns import QUIET, _runner, _spec


def _sample(signals: dict[str, Any], t: float | None = None) -> bytes:
    return json.dumps({"signals": signals, **({"t": t} if t is not None else {})}).encode() + b"\n"


def test_a_stale_signal_is_not_a_frames_context_and_the_per_frame_context_wins(tmp_path: Path, digit_models: Any) -> None:
    control = _runner(digit_models[0], tmp_path)
    now = [2_000_000.0]
    outbox = Outbox(tmp_path / "outbox", max_bytes=64 * 1024**2, min_free_bytes=0)
    capture = Capture("cam-sig", outbox, policy=QUIET, work_dir=tmp_path / "work", clock=lambda: now[0])
    campaigns = Campaigns(tmp_path, clock=lambda: now[0])
    # the reader's parsing and table, fed on this thread with the test clock (the socket is
    # exercised in test_signal_socket.py and end to end)
    source = SignalSource(SignalAddress("unix", path=tmp_path / "unused.sock"), SignalTable(max_age_s=0.45),
                          clock=lambda: now[0])
    campaigns.signals = source.table
    campaigns.update([_spec("left-turns", "context.steering_deg < -20 and context.speed_kmh > 5", frames_only=True)])
    capture.campaigns = campaigns
    expected: dict[int, dict[str, Any]] = {}
    frames = SyntheticDigits(seed=3).frames()
    for i, (_, frame) in zip(range(200), frames):
        now[0] += 0.1
        phase = (i // 20) % 4
        if i % 20 == 0:  # the CAN bridge sends at its own rate: one sample per 2 s here
            if phase == 0:
                source.feed(_sample({"steering_deg": -25.0, "speed_kmh": 12}))
            elif phase == 1:  # stamped 1 s ago (a lagging bridge): newer than what is held, stale on arrival
                source.feed(_sample({"steering_deg": -31.0, "speed_kmh": 12}, t=now[0] - 1.0))
                assert source.table.snapshot()["steering_deg"][1] == -31.0  # kept, yet not any frame's context
            elif phase == 2:  # sidecar speed 0, the application's per-frame context says 12: it wins
                source.feed(_sample({"steering_deg": -22.0, "speed_kmh": 0}))
            else:
                source.feed(_sample({"steering_deg": 4.0, "speed_kmh": 40}))
        if phase == 2:
            campaigns.set_context({"speed_kmh": 12, "road": "wet"}, ts=now[0])
        if phase == 0 and i % 20 <= 4:  # fresh for 0.45 s after the sample: frames 0..4 (0.0-0.4 s)
            expected[i] = {"steering_deg": -25.0, "speed_kmh": 12}
        if phase == 2 and i % 20 <= 4:
            expected[i] = {"steering_deg": -22.0, "speed_kmh": 12, "road": "wet"}
        capture.push(now[0], frame)
        capture.observe(now[0], frame, control, control.predict(frame).prediction)
        capture.encode_pending()
    capture.encode_pending()
    events = [item.event for item in outbox.pending()]
    assert len(events) == len(expected) == 25
    assert all(e.campaign == "left-turns" for e in events)
    assert sorted(json.dumps(e.context, sort_keys=True) for e in events) == sorted(
        json.dumps(c, sort_keys=True) for c in expected.values())
    assert not any(e.context and e.context["steering_deg"] == -31.0 for e in events)  # stale: never used
    assert source.received == 10 and not source.dropped
    outbox.close()
