"""A model with two outputs — ``features`` [N, 100] first, ``probabilities`` [N, 10] second —
is read by name everywhere: offline replay, the shadow monitor's raw-output path, the agent's
runner and self-test, and a manifest inferred from the graph. The embedding is never taken for
class scores (read first-output-first, its 100 values do not fit 10 labels).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgefleet.edge_agent.runner import ModelRunner
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import CapturePolicy, ModelRef
from edgefleet.registry.onnx_check import check_model, infer_manifest
from edgefleet.shadow.errors import OutputDecodeError
from edgefleet.shadow.monitor import ShadowMonitor
from edgefleet.shadow.preprocess import make_preprocessor
from edgefleet.shadow.replay import NamedModel, replay
from tests.embedding.models import FeatureModel, feature_model


@pytest.fixture
def two_outputs(digit_models: Any, tmp_path: Path) -> FeatureModel:
    return feature_model(digit_models[0], tmp_path / "fm", dim=100, first=True)


def _session(path: Path) -> tuple[Any, tuple[str, ...]]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return (lambda x: s.run(None, {name: x})), tuple(o.name for o in s.get_outputs())


def _frames(n: int) -> list[np.ndarray]:
    return [f for _, (_, f) in zip(range(n), SyntheticDigits(seed=4).frames())]


def test_replay_reads_the_classification_output_by_name(two_outputs: FeatureModel, digit_models: Any) -> None:
    control = digit_models[0]
    fn, names = _session(two_outputs.path)
    assert names == ("features", "probabilities")
    plain, _ = _session(control.path)
    frames = _frames(60)
    report = replay(frames, NamedModel(fn, names), plain, two_outputs.manifest, control.manifest)
    assert report.frames == 60 and report.stats.agreement == 1.0  # the same network: same scores
    assert sum(report.per_class_counts.values()) == 60
    again = replay(frames, fn, plain, two_outputs.manifest, control.manifest, control_outputs=names)
    assert again.stats.agreement == 1.0
    with pytest.raises(OutputDecodeError, match="100 scores but the manifest has 10 labels"):
        replay(frames, fn, plain, two_outputs.manifest, control.manifest)  # without names: first output


def test_monitor_decodes_raw_outputs_by_name(two_outputs: FeatureModel, digit_models: Any) -> None:
    fn, names = _session(two_outputs.path)
    plain, _ = _session(digit_models[0].path)
    pre = make_preprocessor(two_outputs.manifest)
    monitor = ShadowMonitor(two_outputs.manifest, digit_models[0].manifest, CapturePolicy(),
                            control_outputs=names, candidate_outputs=["probabilities"])
    for i, frame in enumerate(_frames(9)):
        x = pre(frame)
        obs = monitor.observe(float(i), fn(x), plain(x))
        assert obs.comparison is not None and obs.comparison.agree
        assert obs.control.probs is not None and obs.control.probs.shape == (10,)
    with pytest.raises(OutputDecodeError):
        ShadowMonitor(two_outputs.manifest, None, CapturePolicy()).observe(0.0, fn(pre(_frames(1)[0])))


def test_runner_and_self_test_pick_the_primary_output_by_name(two_outputs: FeatureModel, tmp_path: Path,
                                                             digit_models: Any) -> None:
    d = tmp_path / "bundle"
    d.mkdir()
    (d / two_outputs.manifest.model_file).write_bytes(two_outputs.path.read_bytes())
    ref = ModelRef(name="digits", version=two_outputs.manifest.version,
                   digest=hashlib.sha256(two_outputs.path.read_bytes()).hexdigest())
    runner = ModelRunner.load(ref, two_outputs.manifest, d)
    assert runner.self_test() == len(two_outputs.manifest.test_vectors)
    plain_fn, _ = _session(digit_models[0].path)
    pre = make_preprocessor(digit_models[0].manifest)
    for frame in _frames(6):
        pred = runner.predict(frame).prediction
        assert pred.embedding is not None and pred.embedding.shape == (100,)
        assert np.allclose(pred.probs, np.asarray(plain_fn(pre(frame))[0]).ravel(), atol=1e-6)  # type: ignore[arg-type]


def test_infer_manifest_never_takes_the_embedding_for_the_scores(two_outputs: FeatureModel) -> None:
    data = two_outputs.path.read_bytes()
    labels = [str(i) for i in range(10)]
    m = infer_manifest(data, name="digits", version="x", labels=labels)
    assert m.output is not None and m.output.name == "probabilities"  # the output with 10 values
    m = infer_manifest(data, name="digits", version="y", embedding={"output": "features", "dim": 100})
    assert m.output is not None and m.output.name == "probabilities" and m.labels == labels
    check_model(data, m)
    m = infer_manifest(data, name="digits", version="z", labels=labels, output="probabilities")
    assert m.output is not None and m.output.name == "probabilities"
    from edgefleet.registry.errors import InvalidBundle

    with pytest.raises(InvalidBundle, match="'scores' is not an output"):
        infer_manifest(data, name="digits", version="w", labels=labels, output="scores")
