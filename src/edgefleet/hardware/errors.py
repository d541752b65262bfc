"""Errors of the hardware layer."""

from __future__ import annotations


class HardwareError(Exception):
    """Root of every hardware-layer error."""


class BackendUnavailable(HardwareError):
    """A backend whose runtime (tensorrt, a provider) is not present here; the message says why."""


class ModelLoadError(HardwareError):
    """A model file that cannot be loaded: corrupt, unsupported operators, wrong shapes."""


class InferenceError(HardwareError):
    """A failure while running inference."""
