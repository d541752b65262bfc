"""Hardware layer: device profiles, inference backends, engine cache, device telemetry."""

from __future__ import annotations

import os

from .backends import InferenceBackend, IOSpec, OnnxRuntimeBackend
from .errors import BackendUnavailable, HardwareError, InferenceError, ModelLoadError


def open_backend(model_path: str | os.PathLike[str], **options: object) -> InferenceBackend:
    """Open the best backend for this machine for one ONNX model (CPU ONNX Runtime for now)."""
    return OnnxRuntimeBackend(model_path, **options)  # type: ignore[arg-type]


__all__ = [
    "BackendUnavailable", "HardwareError", "IOSpec", "InferenceBackend", "InferenceError",
    "ModelLoadError", "OnnxRuntimeBackend", "open_backend",
]
