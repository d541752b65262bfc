"""Hardware layer: device profiles, inference backends, engine cache, device telemetry.

Public surface (what the agent calls):

* ``detect_profile(root="/") -> DeviceProfile`` — what this device is; ``hardware_id``.
* ``select_backend(profile, available) -> BackendPlan`` — pure, ordered plan with reasons.
* ``open_backend(model_path, *, profile, cache_dir, model_digest, precision, progress)``.
* ``EngineCache(root)`` — ``key(...)``, ``gc(keep_digests)``.
* ``telemetry.collect_hardware_stats(profile, root)``, ``telemetry.TegrastatsReader``.
* ``report.render_hw_report(root)`` — text for ``fleet-agent hw``.
"""

from __future__ import annotations

from .backends import InferenceBackend, IOSpec, OnnxRuntimeBackend
from .cache import EngineCache, EngineKey, file_digest
from .detect import GpuInfo, detect_profile
from .errors import (
    BackendUnavailable,
    DetectionError,
    EngineBuildError,
    HardwareError,
    InferenceError,
    ModelLoadError,
)
from .opener import default_cache_dir, open_backend
from .profiles import Capabilities, DeviceProfile
from .selection import (
    Availability,
    BackendPlan,
    PlanStep,
    choose_precision,
    probe_availability,
    select_backend,
)

__all__ = [
    "Availability", "BackendPlan", "BackendUnavailable", "Capabilities", "DetectionError", "DeviceProfile",
    "EngineBuildError", "EngineCache", "EngineKey", "GpuInfo", "HardwareError", "IOSpec", "InferenceBackend",
    "InferenceError", "ModelLoadError", "OnnxRuntimeBackend", "PlanStep", "choose_precision",
    "default_cache_dir", "detect_profile", "file_digest", "open_backend", "probe_availability",
    "select_backend",
]
