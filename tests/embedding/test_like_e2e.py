"""``fleet campaign start --like EVENT_ID`` end to end on a manifest-named 100-value embedding.

A real broker, controller (HTTP + MQTT) and two real agents on the digits camera. ``cam-l1``
runs a digits model with a second output ``features`` [N, 100] (the hidden layer through a
fixed linear map); ``cam-l2`` runs the same network with another map — another bundle digest,
another embedding space. A first campaign captures one confident "0" on ``cam-l1``; its record
carries the embedding (float16 base64, dim 100, tensor ``features``, model digest). ``--like``
campaigns built from that record capture frames near it on ``cam-l1`` only: ``cam-l2`` skips
the check, and both the campaign status and the agent say why.

Thresholds (measured on this camera over 3,000 frames, 40 confident zeros as references): no
frame of another class lies within cosine 0.085 or l2 7.9 of a zero; 0.05 and 5.0 keep a margin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import select
from typer.testing import CliRunner

from edgefleet.cloud.cli import app
from edgefleet.cloud.shadow_index import ShadowEvent
from edgefleet.edge_agent.campaigns import cosine_distance, l2_distance
from edgefleet.protocols import CapturePolicy, Embedding
from tests.conftest import Stack, push, wait_until
from tests.embedding.models import feature_model

QUIET = CapturePolicy(low_confidence=False, disagreement=False, max_per_minute=120, max_per_hour=1000,
                      pre_seconds=0.5, post_seconds=0.2)


def _events(stack: Stack, name: str) -> list[ShadowEvent]:
    with stack.controller.session() as s:
        return [e for e in s.exec(select(ShadowEvent)).all() if (e.record or {}).get("campaign") == name]


def _vec(record: dict[str, Any]) -> np.ndarray:
    return np.asarray(Embedding.model_validate(record["embedding"]).values(), dtype=np.float64)


@pytest.mark.slow
def test_like_on_a_100_value_embedding_captures_near_frames_on_the_same_model_only(
        stack: Stack, agents: Any, digit_models: Any, tmp_path: Path) -> None:
    """Slow (~40-70 s on 2 busy cores): two agents install their models, then three campaigns."""
    stack.controller.capture_policy = QUIET
    a_model = feature_model(digit_models[0], tmp_path / "a", version="2.0-features", seed=5)
    b_model = feature_model(digit_models[0], tmp_path / "b", version="2.1-features", seed=11)
    a, b = agents(stack, "cam-l1"), agents(stack, "cam-l2")
    push(stack, a_model)
    push(stack, b_model)
    stack.client.deploy(a_model.manifest.label, "control", ["cam-l1"])
    stack.client.deploy(b_model.manifest.label, "control", ["cam-l2"])
    wait_until(lambda: {d["id"]: d["slots"]["control"]["installed"] for d in stack.client.list_devices()}
               == {"cam-l1": a_model.manifest.label, "cam-l2": b_model.manifest.label}, 90, message="models active")
    auth = ["--url", stack.url, "--token", stack.token]

    # one reviewed capture: a confident zero on cam-l1, its record carrying the embedding
    out = CliRunner().invoke(app, ["campaign", "start", "one-zero", "--select", "device:cam-l1", "--when",
                                   "label == '0' and confidence >= 0.95", "--quota", "1", "--frames-only",
                                   "--max-per-minute", "600", *auth])
    assert out.exit_code == 0, out.output
    (seed,) = wait_until(lambda: _events(stack, "one-zero")[:1], 60, message="the seed capture")
    emb = seed.record["embedding"]
    assert emb["dim"] == 100 and emb["dtype"] == "float16" and emb["output"] == "features"
    assert emb["model_digest"] == seed.record["control"]["model"]["digest"]
    assert len(emb["data"]) == 268  # 100 float16 values in base64: 200 bytes, not 100 JSON numbers
    reference = _vec(seed.record)
    assert reference.shape == (100,) and seed.record["control"]["label"] == "0"

    # --metric l2: cam-l1 captures up to its share; cam-l2 (another model) skips, and says why
    out = CliRunner().invoke(app, ["campaign", "start", "zeros-l2", "--like", seed.event_id, "--metric", "l2",
                                   "--threshold", "5.0", "--quota", "100", "--per-device", "3", "--frames-only",
                                   "--max-per-minute", "600", *auth])
    assert out.exit_code == 0, out.output
    wait_until(lambda: stack.client.campaign("zeros-l2")["devices"].get("cam-l1") == 3, 90, message="3 l2 captures")
    wait_until(lambda: "zeros-l2" in b.agent.campaigns.skipped, 30, message="cam-l2 skips the like check")
    assert "not the model the embedding came from" in b.agent.campaigns.skipped["zeros-l2"]
    assert b.agent.campaigns.refused.get("zeros-l2:model_digest", 0) > 0
    status = stack.client.campaign("zeros-l2")
    assert status["like"] == {"event_id": seed.event_id, "threshold": 5.0, "metric": "l2", "dim": 100,
                              "output": "features", "model_digest": emb["model_digest"]}
    assert set(status["skipped"]) == {"cam-l2"} and "2.1-features" in status["skipped"]["cam-l2"]
    out = CliRunner().invoke(app, ["campaign", "status", "zeros-l2", *auth])
    assert out.exit_code == 0 and "not comparing" in out.output and "cam-l2" in out.output, out.output
    l2_events = wait_until(lambda: (ev := _events(stack, "zeros-l2")) and len(ev) >= 3 and ev, 30, message="stored")
    assert {e.device_id for e in l2_events} == {"cam-l1"}
    for e in l2_events:
        assert e.record["control"]["label"] == "0"
        assert l2_distance(_vec(e.record), reference) <= 5.0 + 0.05  # float16 on both sides
    assert not b.agent.capture.counts["campaign_admitted"]
    stack.client.stop_campaign("zeros-l2")

    # cosine (the default): near frames of cam-l1 until the quota, nothing of another class
    out = CliRunner().invoke(app, ["campaign", "start", "more-zeros", "--like", seed.event_id, "--threshold", "0.05",
                                   "--quota", "4", "--frames-only", "--max-per-minute", "600", *auth])
    assert out.exit_code == 0, out.output
    wait_until(lambda: stack.client.campaign("more-zeros")["state"] == "completed", 90, message="quota met")
    events = wait_until(lambda: (ev := _events(stack, "more-zeros")) and len(ev) >= 4 and ev, 30, message="stored")
    assert {e.device_id for e in events} == {"cam-l1"}
    assert {e.record["control"]["label"] for e in events} == {"0"}
    assert max(cosine_distance(_vec(e.record), reference) for e in events) <= 0.05 + 1e-3
    assert a.agent.capture.counts["campaign_admitted"] >= 8  # 1 seed + 3 l2 + 4 cosine
