"""Native TensorRT backend: engine build, cache reuse, corrupt engine rebuild.

Runs only where tensorrt and pycuda import and a CUDA device exists (Jetson, dGPU box);
skipped elsewhere with the reason. Not run in this repository's CI machine (no GPU).
"""

from __future__ import annotations

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed: native TensorRT tests need a Jetson or NVIDIA GPU")
pytest.importorskip("pycuda.driver", reason="pycuda is not installed: native TensorRT tests need it")

from edgefleet.hardware import EngineCache, detect_profile, open_backend  # noqa: E402
from edgefleet.hardware.backends.tensorrt_backend import TensorRTBackend  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _cuda_device():
    import pycuda.driver as cuda

    try:
        cuda.init()
        if cuda.Device.count() == 0:
            pytest.skip("no CUDA device")
    except cuda.Error as exc:
        pytest.skip(f"CUDA unavailable: {exc}")


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_engine_is_built_then_loaded_from_cache_and_matches_sklearn(demo_model, tmp_path, precision, atol):
    path, images, labels, probs = demo_model
    progress = []
    first = TensorRTBackend(path, cache=EngineCache(tmp_path), precision=precision, max_batch=64,
                            progress=lambda f, m: progress.append(f))
    assert first.built and progress[-1] == 1.0
    first.prepare()
    (out,) = first.infer({"input": images[:64]})
    first.close()
    np.testing.assert_allclose(out, probs[:64], atol=atol)
    assert (out.argmax(1) == labels[:64]).mean() > 0.95
    second = TensorRTBackend(path, cache=EngineCache(tmp_path), precision=precision, max_batch=64)
    assert not second.built
    assert [s.name for s in second.inputs] == ["input"] and [s.name for s in second.outputs] == ["probabilities"]
    (again,) = second.infer({"input": images[:1]})
    np.testing.assert_allclose(again, out[:1], atol=1e-6)
    second.close()


def test_corrupt_engine_file_is_rebuilt_not_a_crash(demo_model, tmp_path):
    path = demo_model[0]
    cache = EngineCache(tmp_path)
    backend = TensorRTBackend(path, cache=cache, precision="fp32")
    key = backend.key
    backend.close()
    cache.engine_path(key).write_bytes(b"\x00" * 1024)
    rebuilt = TensorRTBackend(path, cache=cache, precision="fp32")
    assert rebuilt.built
    rebuilt.close()


def test_engine_with_valid_sidecar_but_garbage_body_is_rebuilt(demo_model, tmp_path):
    """Deserialization failure (what an engine from another TensorRT version gives) → rebuild."""
    path = demo_model[0]
    cache = EngineCache(tmp_path)
    backend = TensorRTBackend(path, cache=cache, precision="fp32")
    key = backend.key
    backend.close()
    cache.store(key, b"ftrt" + b"\x01" * 2048)
    rebuilt = TensorRTBackend(path, cache=cache, precision="fp32")
    assert rebuilt.built
    rebuilt.close()


def test_open_backend_picks_tensorrt_on_this_device(demo_model, tmp_path):
    profile = detect_profile()
    assert profile.has_nvidia_gpu
    backend = open_backend(demo_model[0], profile=profile, cache_dir=tmp_path)
    assert backend.step.label == "tensorrt"
    backend.prepare()
    (out,) = backend.infer({"input": demo_model[1][:1]})
    assert out.shape == (1, 10)
    backend.close()
