"""Fixtures of the replay-gate tests: recorded frames from the synthetic digits camera, and
real ONNX candidates (``tests/rollout_e2e/candidates.py``) written next to their manifests."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from edgefleet.cloud.demo.train import TrainedModel
from edgefleet.edge_agent.sources import SyntheticDigits


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("recorded")
    camera = SyntheticDigits(seed=11, hold_frames=1)
    for i, (_, frame) in zip(range(120), camera.frames()):
        assert cv2.imwrite(str(d / f"{i:04d}.png"), frame)
    return d


@pytest.fixture
def no_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No controller anywhere: an empty data dir, no URL or token in the environment."""
    for var in ("EDGEFLEET_URL", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "no-controller"
    home.mkdir()
    monkeypatch.setenv("EDGEFLEET_HOME", str(home))


def write_manifest(model: TrainedModel, out: Path) -> Path:
    out.write_bytes(model.manifest.to_json())
    return out
