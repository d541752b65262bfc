"""The CPU backend end to end through open_backend, on the demo model and the light models."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from edgefleet.hardware import (
    BackendUnavailable,
    InferenceError,
    ModelLoadError,
    detect_profile,
    open_backend,
    probe_availability,
)

from .conftest import CPU_ONLY, FULL_JETSON, TREES
from .models import light_model


def test_demo_model_predicts_what_sklearn_predicts(demo_model, tmp_path):
    path, images, labels, probs = demo_model
    progress = []
    with open_backend(path, profile=detect_profile(TREES / "cpu-x86_64"), cache_dir=tmp_path,
                      progress=lambda f, m: progress.append((f, m))) as backend:
        assert backend.step.label == "ort-cpu"
        assert [s.name for s in backend.inputs] == ["input"]
        assert backend.inputs[0].dtype == "float32" and backend.inputs[0].shape[1:] == (1, 8, 8)
        assert backend.outputs[0].name == "probabilities"
        backend.prepare()
        (out,) = backend.infer({"input": images})
    assert out.shape == (len(images), 10)
    np.testing.assert_allclose(out, probs, atol=1e-4)
    assert (out.argmax(1) == labels).all()
    assert progress[0][0] == 0.0 and progress[-1][0] == 1.0


def test_passed_over_backends_are_logged_with_reasons(demo_model, tmp_path, caplog):
    path = demo_model[0]
    caplog.set_level(logging.INFO, logger="edgefleet.hardware")
    backend = open_backend(path, profile=detect_profile(TREES / "orin-nano"), cache_dir=tmp_path,
                           availability=CPU_ONLY)
    assert backend.step.label == "ort-cpu"
    labels = [label for label, _ in backend.fallbacks]
    assert labels == ["tensorrt", "ort-tensorrt", "ort-cuda"]
    text = caplog.text
    assert "backend tensorrt passed over: tensorrt cannot be imported" in text
    assert "no TensorrtExecutionProvider" in text and "runs on ort-cpu" in text


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_provider_onnxruntime_silently_drops_is_a_fallback_not_a_lie(demo_model, tmp_path, caplog):
    """Told that the TensorRT and CUDA providers exist (they do not here), the real ONNX Runtime
    drops them; open_backend notices and falls back to the CPU with the reason logged."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    caplog.set_level(logging.WARNING, logger="edgefleet.hardware")
    backend = open_backend(demo_model[0], profile=detect_profile(TREES / "x86-rtx3090"), cache_dir=tmp_path,
                           availability=FULL_JETSON, allow=["ort-tensorrt", "ort-cuda", "ort-cpu"])
    assert backend.step.label == "ort-cpu"
    failed = dict(backend.fallbacks)
    assert failed["ort-tensorrt"].startswith("failed: ONNX Runtime did not take TensorrtExecutionProvider")
    assert failed["ort-cuda"].startswith("failed: ONNX Runtime did not take CUDAExecutionProvider")
    assert "falling back" in caplog.text


def test_this_machine_opens_a_backend_with_its_own_probe(demo_model, tmp_path):
    backend = open_backend(demo_model[0], cache_dir=tmp_path)
    assert backend.step.usable
    assert probe_availability().ort_version == ort.__version__


def test_corrupt_model_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(ModelLoadError):
        open_backend(bad, profile=detect_profile(TREES / "cpu-x86_64"), cache_dir=tmp_path)


def test_nothing_usable_is_backend_unavailable(demo_model, tmp_path):
    with pytest.raises(BackendUnavailable, match="disabled by configuration"):
        open_backend(demo_model[0], profile=detect_profile(TREES / "cpu-x86_64"), cache_dir=tmp_path,
                     availability=CPU_ONLY, allow=["tensorrt"])


def test_bad_feed_is_an_inference_error(demo_model, tmp_path):
    backend = open_backend(demo_model[0], profile=detect_profile(TREES / "cpu-x86_64"), cache_dir=tmp_path)
    with pytest.raises(InferenceError):
        backend.infer({"input": np.zeros((1, 3), dtype=np.float32)})


@pytest.mark.parametrize("name", ["resnet50", "squeezenet", "shufflenet", "densenet121", "inception_v1"])
def test_light_architectures_match_bare_onnxruntime_and_shipped_output(name, tmp_path):
    path, expected = light_model(name)
    backend = open_backend(path, profile=detect_profile(TREES / "cpu-x86_64"), cache_dir=tmp_path,
                           availability=CPU_ONLY)
    spec = backend.inputs[0]
    assert spec.shape == (1, 3, 224, 224)
    x = np.random.default_rng(0).random(spec.shape, dtype=np.float32)
    (ours,) = backend.infer({spec.name: x})
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    bare = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (ref,) = bare.run(None, {spec.name: x})
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-5)
    backend.close()
