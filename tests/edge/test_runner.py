"""Model checks on the device: corrupt ONNX, wrong input shape, failing self-test."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.edge_agent.errors import InputMismatch, ModelLoadFailed, SelfTestFailed
from edgefleet.edge_agent.runner import ModelRunner
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import ModelRef

REF = ModelRef(name="digits", version="1.0", digest="0" * 64)


def _dir(tmp_path: Path, model_bytes: bytes) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "model.onnx").write_bytes(model_bytes)
    return d


def test_good_model_loads_predicts_and_passes_self_test(tmp_path: Path, digit_models) -> None:
    control, _ = digit_models
    runner = ModelRunner.load(REF, control.manifest, _dir(tmp_path, control.path.read_bytes()))
    assert runner.self_test() == 3
    cam = SyntheticDigits(seed=3)
    _, frame = next(cam.frames())
    result = runner.predict(frame)
    assert result.prediction.label in control.manifest.labels and result.latency_ms > 0


def test_corrupt_onnx_is_refused(tmp_path: Path, digit_models) -> None:
    control, _ = digit_models
    with pytest.raises(ModelLoadFailed):
        ModelRunner.load(REF, control.manifest, _dir(tmp_path, b"\x08\x01garbage"))


def test_wrong_input_shape_is_refused(tmp_path: Path, digit_models) -> None:
    control, _ = digit_models
    manifest = control.manifest.model_copy(update={"input": control.manifest.input.model_copy(update={"shape": [None, 3, 8, 8]})})
    with pytest.raises(InputMismatch, match="3, 8, 8"):
        ModelRunner.load(REF, manifest, _dir(tmp_path, control.path.read_bytes()))


def test_self_test_catches_a_model_that_differs_from_its_vectors(tmp_path: Path, digit_models) -> None:
    control, candidate = digit_models
    # the candidate's weights with the control's expected outputs
    runner = ModelRunner.load(REF, control.manifest, _dir(tmp_path, candidate.path.read_bytes()))
    with pytest.raises(SelfTestFailed, match="differs"):
        runner.self_test()
