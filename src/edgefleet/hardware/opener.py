"""``open_backend``: walk the backend plan for this device and open the first step that works.

profile (detected unless given) + what is installed → ``select_backend`` → for each
usable step: open it (native TensorRT builds or loads its engine through the
``EngineCache``; the ONNX Runtime TensorRT provider keeps its engines in a per-key
directory of the same cache). Every step passed over, and every step that failed to
open, is logged with its reason and kept on the backend as ``fallbacks``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .backends.base import InferenceBackend
from .backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    cuda_provider_options,
    tensorrt_provider_options,
)
from .cache import EngineCache, file_digest
from .detect import detect_profile
from .errors import BackendUnavailable, ModelLoadError
from .profiles import DeviceProfile
from .selection import CPU_EP, CUDA_EP, TRT_EP, Availability, BackendPlan, PlanStep, select_backend

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]
ORT_TRT_VERSION_TAG = "ort-ep"  # the provider links its own TensorRT; ORT's version goes in the key


def default_cache_dir() -> Path:
    env = os.environ.get("EDGEFLEET_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgefleet" / "engines"


def open_backend(
    model_path: str | os.PathLike[str],
    *,
    profile: DeviceProfile | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    model_digest: str | None = None,
    precision: str | None = None,
    progress: Progress | None = None,
    allow: Iterable[str] | None = None,
    availability: Availability | None = None,
    intra_op_threads: int = 1,
    workspace_mb: int = 1024,
    dla_core: int | None = None,
    background: bool = False,
    allow_spinning: bool = False,
) -> InferenceBackend:
    """Open ``model_path`` with the fastest backend that works on this device.

    Args:
        profile: the device; detected when None.
        cache_dir: engine cache root (``$EDGEFLEET_ENGINE_CACHE`` or ~/.cache/edgefleet/engines).
        model_digest: the model's digest as the agent knows it (the bundle digest), used as
            the cache key and by ``EngineCache.gc``; sha256 of the file when None.
        precision: ``fp32``/``fp16``/``int8`` or None for the best the device supports.
        progress: called with (fraction, message) while engines are built.
        allow: restrict to these plan steps (``tensorrt``, ``ort-tensorrt``, ``ort-cuda``, ``ort-cpu``).
        availability: what is installed; probed when None.
        intra_op_threads: ONNX Runtime threads per operator.
        workspace_mb: TensorRT builder workspace.
        dla_core: build for this DLA core (GPU fallback on), where the profile has DLA.
        background: a shadow model: ONNX Runtime single-threaded, sequential, no spinning
            (``allow_spinning``); TensorRT on the lowest-priority CUDA stream (the control
            model's stream gets the highest).

    Returns:
        An open backend; ``backend.plan`` holds the plan, ``backend.step`` the step taken
        and ``backend.fallbacks`` (label, reason) for every faster option passed over.

    Raises:
        ModelLoadError: every usable backend refused the model (the last one's error).
        BackendUnavailable: no backend is usable on this machine.
    """
    profile = profile or detect_profile()
    plan = select_backend(profile, availability, precision=precision, allow=allow)
    if dla_core is not None and dla_core >= profile.capabilities.dla_cores:
        log.info("DLA core %s requested but %s has %d DLA cores; using the GPU",
                 dla_core, profile.hardware_id, profile.capabilities.dla_cores)
        dla_core = None
    cache = EngineCache(cache_dir if cache_dir is not None else default_cache_dir())
    fallbacks: list[tuple[str, str]] = []
    last_error: Exception | None = None
    digest = model_digest
    for step in plan.steps:
        if not step.usable:
            fallbacks.append((step.label, step.reason))
            log.info("backend %s passed over: %s", step.label, step.reason)
            continue
        if step.label in ("tensorrt", "ort-tensorrt") and digest is None:
            digest = file_digest(model_path)
        try:
            backend = _open_step(step, plan, profile, model_path, cache, digest, progress,
                                 intra_op_threads, workspace_mb, dla_core, background, allow_spinning)
        except (BackendUnavailable, ModelLoadError) as exc:
            log.warning("backend %s failed for %s, falling back: %s", step.label, os.fspath(model_path), exc)
            fallbacks.append((step.label, f"failed: {exc}"))
            last_error = exc
            continue
        backend.plan = plan  # type: ignore[attr-defined]
        backend.step = step  # type: ignore[attr-defined]
        backend.fallbacks = fallbacks  # type: ignore[attr-defined]
        log.info("model %s runs on %s (%s, %s)", Path(model_path).name, step.label, plan.precision, step.reason)
        return backend
    if isinstance(last_error, ModelLoadError):
        raise last_error
    reasons = "; ".join(f"{label}: {reason}" for label, reason in fallbacks)
    raise BackendUnavailable(f"no backend can run {os.fspath(model_path)!r} here ({reasons})")


def _open_step(
    step: PlanStep,
    plan: BackendPlan,
    profile: DeviceProfile,
    model_path: str | os.PathLike[str],
    cache: EngineCache,
    digest: str | None,
    progress: Progress | None,
    intra_op_threads: int,
    workspace_mb: int,
    dla_core: int | None,
    background: bool = False,
    allow_spinning: bool = False,
) -> InferenceBackend:
    caps = profile.capabilities
    ort_bg: dict[str, Any] = {"background": background, "allow_spinning": allow_spinning}
    if step.label == "tensorrt":
        from .backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model_path, cache=cache, model_digest=digest, precision=plan.precision,
                               workspace_mb=workspace_mb, dla_core=dla_core, progress=progress,
                               stream_priority="low" if background else "high")
    cuda_opts = cuda_provider_options(unified_memory=caps.unified_memory)
    if step.label == "ort-tensorrt":
        import onnxruntime as ort

        assert digest is not None
        key = cache.key(model_digest=digest, trt_version=f"{ORT_TRT_VERSION_TAG}-{ort.__version__}",
                        compute_capability=caps.compute_capability, precision=plan.precision,
                        backend="ort-tensorrt", workspace_mb=workspace_mb, dla_core=dla_core)
        timing = cache.timing_cache_path(f"{ORT_TRT_VERSION_TAG}-{ort.__version__}", caps.compute_capability)
        timing.parent.mkdir(parents=True, exist_ok=True)
        trt_opts = tensorrt_provider_options(precision=plan.precision, engine_cache_dir=cache.provider_dir(key),
                                             timing_cache_dir=timing.parent, workspace_mb=workspace_mb,
                                             dla_core=dla_core)
        providers: list = [(TRT_EP, trt_opts), (CUDA_EP, cuda_opts), CPU_EP]
        return OnnxRuntimeBackend(model_path, providers=providers, intra_op_threads=intra_op_threads,
                                  require_provider=TRT_EP, progress=progress, **ort_bg)
    if step.label == "ort-cuda":
        return OnnxRuntimeBackend(model_path, providers=[(CUDA_EP, cuda_opts), CPU_EP],
                                  intra_op_threads=intra_op_threads, require_provider=CUDA_EP, progress=progress,
                                  **ort_bg)
    return OnnxRuntimeBackend(model_path, providers=[CPU_EP], intra_op_threads=intra_op_threads,
                              progress=progress, **ort_bg)
