"""Errors of the hardware layer.

Two roots of trouble: the machine cannot do something (``BackendUnavailable``, retrying on
the same machine will not help, another backend may) and a model or engine that is bad
(``ModelLoadError``, ``EngineBuildError``, ``InferenceError``).
"""

from __future__ import annotations


class HardwareError(Exception):
    """Root of every hardware-layer error."""


class BackendUnavailable(HardwareError):
    """A backend whose runtime (tensorrt, a provider) is not present here; the message says why."""


class ModelLoadError(HardwareError):
    """A model file that cannot be loaded: corrupt, unsupported operators, wrong shapes."""


class EngineBuildError(ModelLoadError):
    """TensorRT (or the TensorRT execution provider) could not build an engine for a model."""


class InferenceError(HardwareError):
    """A failure while running inference."""


class DetectionError(HardwareError):
    """A device description that cannot be read (unreadable fixture tree, bad nvidia-smi output)."""
