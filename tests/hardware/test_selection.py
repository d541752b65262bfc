"""Provider and backend selection for each profile: the pure plan and its reasons."""

from __future__ import annotations

import pytest

from edgefleet.hardware import choose_precision, detect_profile, select_backend
from edgefleet.hardware.backends import cuda_provider_options, tensorrt_provider_options

from .conftest import CPU_ONLY, CUDA_ONLY, FULL_JETSON, ORT_GPU_ONLY, TREES, TRT_NO_PYCUDA

CASES = [
    # tree, availability, chosen step, precision
    ("agx-orin-64gb", FULL_JETSON, "tensorrt", "fp16"),
    ("orin-nano", FULL_JETSON, "tensorrt", "fp16"),
    ("xavier-nx", ORT_GPU_ONLY, "ort-tensorrt", "fp16"),
    ("orin-nx-16gb", CUDA_ONLY, "ort-cuda", "fp16"),
    ("x86-rtx3090", FULL_JETSON, "tensorrt", "fp16"),
    ("x86-rtx3090", CUDA_ONLY, "ort-cuda", "fp16"),
    ("x86-rtx3090", TRT_NO_PYCUDA, "ort-cpu", "fp16"),
    ("cpu-x86_64", FULL_JETSON, "ort-cpu", "fp32"),
    ("cpu-aarch64-rpi", CPU_ONLY, "ort-cpu", "fp32"),
]


@pytest.mark.parametrize("tree,available,chosen,precision", CASES)
def test_each_profile_gets_the_fastest_available_backend(tree, available, chosen, precision):
    plan = select_backend(detect_profile(TREES / tree), available)
    assert [s.label for s in plan.steps] == ["tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu"]
    assert plan.chosen is not None and plan.chosen.label == chosen
    assert plan.precision == precision
    assert plan.steps[-1].usable  # CPU is always the last resort


def test_passed_over_steps_say_why():
    plan = select_backend(detect_profile(TREES / "x86-rtx3090"), TRT_NO_PYCUDA)
    reasons = {s.label: s.reason for s in plan.passed_over()}
    assert "pycuda" in reasons["tensorrt"]
    assert "no TensorrtExecutionProvider" in reasons["ort-tensorrt"]
    assert "no CUDAExecutionProvider" in reasons["ort-cuda"]


def test_cpu_profile_never_plans_gpu_providers_even_if_installed():
    plan = select_backend(detect_profile(TREES / "cpu-x86_64"), FULL_JETSON)
    for step in plan.steps[:3]:
        assert not step.usable and "no NVIDIA GPU" in step.reason


def test_allow_restricts_the_plan():
    plan = select_backend(detect_profile(TREES / "agx-orin-64gb"), FULL_JETSON, allow=["ort-cuda", "ort-cpu"])
    assert plan.chosen.label == "ort-cuda"
    assert plan.steps[0].reason == "disabled by configuration"
    with pytest.raises(ValueError):
        select_backend(detect_profile(TREES / "agx-orin-64gb"), FULL_JETSON, allow=["openvino"])


@pytest.mark.parametrize("tree,requested,expected", [
    ("agx-orin-64gb", None, "fp16"),
    ("agx-orin-64gb", "int8", "int8"),
    ("agx-orin-64gb", "fp32", "fp32"),
    ("cpu-x86_64", "int8", "fp32"),
])
def test_precision_follows_profile_and_request(tree, requested, expected):
    assert choose_precision(detect_profile(TREES / tree), requested)[0] == expected


def test_unsupported_precision_is_lowered_with_a_reason(tmp_path):
    from edgefleet.hardware import GpuInfo

    pascal = detect_profile(TREES / "cpu-x86_64", gpu_probe=lambda: [GpuInfo("NVIDIA GeForce GTX 1080", 8192, "6.1")])
    assert choose_precision(pascal, None) == ("fp32", "GPU has no fast FP16: FP32")
    assert choose_precision(pascal, "int8")[0] == "int8"
    nano = detect_profile(TREES / "cpu-x86_64", gpu_probe=lambda: [GpuInfo("Quadro M2000", 4096, "5.2")])
    prec, reason = choose_precision(nano, "int8")
    assert prec == "fp32" and "INT8 requested but not supported" in reason
    with pytest.raises(ValueError):
        choose_precision(nano, "bf16")


def test_tensorrt_provider_options_carry_caches_and_precision(tmp_path):
    opts = tensorrt_provider_options(precision="int8", engine_cache_dir=tmp_path / "e", timing_cache_dir=tmp_path / "t",
                                     workspace_mb=512, dla_core=1)
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "e")
    assert opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_timing_cache_path"] == str(tmp_path / "t")
    assert (opts["trt_fp16_enable"], opts["trt_int8_enable"]) == ("True", "True")
    assert (opts["trt_dla_enable"], opts["trt_dla_core"]) == ("True", "1")
    assert opts["trt_max_workspace_size"] == str(512 * 1024 * 1024)
    fp32 = tensorrt_provider_options(precision="fp32", engine_cache_dir="e", timing_cache_dir="t")
    assert fp32["trt_fp16_enable"] == "False" and "trt_dla_enable" not in fp32


def test_cuda_provider_options_differ_for_unified_memory():
    assert cuda_provider_options(unified_memory=True)["arena_extend_strategy"] == "kSameAsRequested"
    assert cuda_provider_options(unified_memory=False)["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert cuda_provider_options(gpu_mem_limit_mb=100)["gpu_mem_limit"] == str(100 * 1024 * 1024)
