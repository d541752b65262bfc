"""Inference backends behind one interface."""

from .base import InferenceBackend, IOSpec
from .onnxruntime_backend import OnnxRuntimeBackend

__all__ = ["IOSpec", "InferenceBackend", "OnnxRuntimeBackend"]
