"""Inference backends behind one interface.

``TensorRTBackend`` lives in ``backends.tensorrt_backend`` and is imported only where it is
used, so that importing this package never touches tensorrt or pycuda.
"""

from .base import InferenceBackend, IOSpec
from .onnxruntime_backend import (
           OnnxRuntimeBackend,
           cuda_provider_options,
           tensorrt_provider_options,
)

__all__ = ["IOSpec", "InferenceBackend", "OnnxRuntimeBackend", "cuda_provider_options",
           "tensorrt_provider_options"]
