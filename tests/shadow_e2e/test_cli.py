"""``fleet shadow replay`` and ``fleet shadow stats`` against a real controller on loopback."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
from typer.testing import CliRunner

from edgefleet.cloud import shadow_index
from edgefleet.cloud.cli import app
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import ModelRef, ShadowStats, Telemetry
from tests.conftest import Stack, push


def test_replay_prints_agreement_and_the_confusion_matrix_before_any_deployment(
    stack: Stack, digit_models: Any, tmp_path: Path
) -> None:
    control, candidate = digit_models
    push(stack, control)
    push(stack, candidate)
    camera = SyntheticDigits(seed=5, hold_frames=1)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, (_, frame) in zip(range(200), camera.frames()):
        cv2.imwrite(str(frames / f"{i:04d}.png"), frame)
    auth = ["--url", stack.url, "--token", stack.token]
    result = CliRunner().invoke(app, ["shadow", "replay", "--control", "digits:1.0", "--candidate", "digits:2.0",
                                      "--source", str(frames), *auth])
    assert result.exit_code == 0, result.output
    assert "frames: 200" in result.output and "agreement:" in result.output
    assert "confusion (rows: digits:1.0, columns: digits:2.0)" in result.output
    assert "8:" in result.output.split("disagreements per control class:")[1]  # the weak class shows up

    missing = CliRunner().invoke(app, ["shadow", "replay", "--control", "digits:9", "--candidate", "digits:2.0",
                                       "--source", str(frames), *auth])
    assert missing.exit_code == 1 and "no model digits:9" in missing.output

    ctl = ModelRef(name="digits", version="1.0", digest="a" * 64)
    cand = ModelRef(name="digits", version="2.0", digest="b" * 64)
    now = datetime.now(timezone.utc)
    with stack.controller.session() as s:
        shadow_index.record_pair_stats(s, Telemetry(
            device_id="cam-9", period_start=now, period_end=now, control=ctl, frames=50,
            shadow=ShadowStats(candidate=cand, frames=50, disagreements=5, confusion={"8": {"8": 45, "3": 5}})))
    listed = CliRunner().invoke(app, ["shadow", "stats", *auth], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "digits:2.0" in listed.output and "90.00%" in listed.output
    one = CliRunner().invoke(app, ["shadow", "stats", "--pair", "digits:1.0,digits:2.0", *auth], env={"COLUMNS": "200"})
    assert one.exit_code == 0 and "agreement 90.00%" in one.output and "cam-9" in one.output
