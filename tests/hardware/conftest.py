from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.hardware import Availability

from .models import build_demo_model

FIXTURES = Path(__file__).parent / "fixtures"
TREES = FIXTURES / "trees"
TEGRASTATS = FIXTURES / "tegrastats"

# What is installed, as seen on each kind of device.
FULL_JETSON = Availability("10.3.0", None, True, None, "1.20.0",
                           ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), None)
ORT_GPU_ONLY = Availability(None, "tensorrt cannot be imported (ModuleNotFoundError)", False, "pycuda cannot be imported",
                            "1.17.0", ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), None)
CUDA_ONLY = Availability(None, "tensorrt cannot be imported (ModuleNotFoundError)", False, "pycuda cannot be imported",
                         "1.17.0", ("CUDAExecutionProvider", "CPUExecutionProvider"), None)
TRT_NO_PYCUDA = Availability("8.6.2", None, False, "pycuda cannot be imported (ModuleNotFoundError)",
                             "1.17.0", ("CPUExecutionProvider",), None)
CPU_ONLY = Availability(None, "tensorrt cannot be imported (ModuleNotFoundError)", False, "pycuda cannot be imported",
                        "1.31.1", ("CPUExecutionProvider",), None)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory):
    return build_demo_model(tmp_path_factory.mktemp("demo") / "digits.onnx")
