"""Which backend to use on a device: a pure plan, in order, with the reason for each step.

``probe_availability()`` is the only I/O here (it imports tensorrt, pycuda and
onnxruntime to see what is installed). ``select_backend(profile, available)`` is pure:
the fixed preference order is

    1. ``tensorrt``      native TensorRT engine (tensorrt + pycuda)
    2. ``ort-tensorrt``  ONNX Runtime, TensorRT execution provider (+ CUDA, CPU)
    3. ``ort-cuda``      ONNX Runtime, CUDA execution provider (+ CPU)
    4. ``ort-cpu``       ONNX Runtime, CPU execution provider

and each step is marked usable or not with the reason. ``open_backend`` walks the usable
steps and logs why every faster option was passed over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .profiles import DeviceProfile

STEP_ORDER = ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu")
PRECISIONS = ("fp32", "fp16", "int8")
TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


@dataclass(frozen=True)
class Availability:
    """What is installed on this machine. ``*_error`` says why something is missing."""

    tensorrt_version: str | None = None
    tensorrt_error: str | None = "not probed"
    pycuda: bool = False
    pycuda_error: str | None = "not probed"
    ort_version: str | None = None
    ort_providers: tuple[str, ...] = ()
    ort_error: str | None = "not probed"


def probe_availability() -> Availability:
    """Import the optional runtimes to see which are present (never raises)."""
    trt_version = trt_error = None
    try:
        import tensorrt as trt  # type: ignore[import-not-found]

        trt_version = str(trt.__version__)
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer
        trt_error = f"tensorrt cannot be imported ({type(exc).__name__}: {exc})"
    pycuda_ok, pycuda_error = False, None
    try:
        import pycuda.driver  # type: ignore[import-not-found]  # noqa: F401

        pycuda_ok = True
    except Exception as exc:
        pycuda_error = f"pycuda cannot be imported ({type(exc).__name__}: {exc})"
    ort_version, providers, ort_error = None, (), None
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
        providers = tuple(ort.get_available_providers())
    except Exception as exc:
        ort_error = f"onnxruntime cannot be imported ({type(exc).__name__}: {exc})"
    return Availability(trt_version, trt_error, pycuda_ok, pycuda_error, ort_version, providers, ort_error)


@dataclass(frozen=True)
class PlanStep:
    label: str  # one of STEP_ORDER
    backend: str  # "tensorrt" | "onnxruntime"
    providers: tuple[str, ...]
    usable: bool
    reason: str


@dataclass(frozen=True)
class BackendPlan:
    hardware_id: str
    precision: str
    precision_reason: str
    steps: tuple[PlanStep, ...] = field(default=())

    @property
    def usable(self) -> list[PlanStep]:
        return [s for s in self.steps if s.usable]

    @property
    def chosen(self) -> PlanStep | None:
        return next(iter(self.usable), None)

    def passed_over(self) -> list[PlanStep]:
        """Steps faster than the chosen one that cannot be used, in order."""
        out = []
        for step in self.steps:
            if step.usable:
                break
            out.append(step)
        return out


def choose_precision(profile: DeviceProfile, requested: str | None) -> tuple[str, str]:
    """The precision to build with, and why.

    ``None`` means "the fastest safe one": FP16 where the GPU has fast FP16, else FP32.
    INT8 only when asked for (it needs a quantized or calibrated model) and supported;
    an unsupported request is lowered, never raised to.
    """
    caps = profile.capabilities
    if requested is not None and requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if not profile.has_nvidia_gpu:
        return "fp32", "CPU-only device: FP32"
    if requested == "int8":
        if caps.int8:
            return "int8", "INT8 requested and supported"
        requested = "fp16"
        lowered = "INT8 requested but not supported by this GPU; "
    else:
        lowered = ""
    if requested in (None, "fp16"):
        if caps.fp16:
            return "fp16", lowered + ("FP16 requested and supported" if requested else "GPU has fast FP16")
        return "fp32", lowered + "GPU has no fast FP16: FP32"
    return "fp32", "FP32 requested"


def select_backend(
    profile: DeviceProfile,
    available: Availability | None = None,
    *,
    precision: str | None = None,
    allow: Iterable[str] | None = None,
) -> BackendPlan:
    """The ordered plan of backends for ``profile`` given what is installed.

    Args:
        profile: the detected device.
        available: what is installed; probed when None.
        precision: requested precision (``fp32``/``fp16``/``int8``) or None for the best.
        allow: restrict to these step labels (configuration: e.g. ``["ort-cpu"]``).
    """
    av = available if available is not None else probe_availability()
    prec, prec_reason = choose_precision(profile, precision)
    allowed = set(allow) if allow is not None else set(STEP_ORDER)
    unknown = allowed - set(STEP_ORDER)
    if unknown:
        raise ValueError(f"unknown backend step(s) {sorted(unknown)}; known: {STEP_ORDER}")
    gpu = profile.has_nvidia_gpu
    no_gpu = f"no NVIDIA GPU on this device ({profile.hardware_id})"
    ort_missing = av.ort_error or "onnxruntime is not installed"

    def ort_step(label: str, provider: str, providers: tuple[str, ...]) -> PlanStep:
        if not gpu and provider != CPU_EP:
            return PlanStep(label, "onnxruntime", providers, False, no_gpu)
        if av.ort_version is None:
            return PlanStep(label, "onnxruntime", providers, False, ort_missing)
        if provider not in av.ort_providers:
            return PlanStep(label, "onnxruntime", providers, False,
                            f"onnxruntime {av.ort_version} has no {provider} "
                            f"(available: {', '.join(av.ort_providers) or 'none'})")
        return PlanStep(label, "onnxruntime", providers, True, f"onnxruntime {av.ort_version} with {provider}")

    if not gpu:
        native = PlanStep("tensorrt", "tensorrt", (), False, no_gpu)
    elif av.tensorrt_version is None:
        native = PlanStep("tensorrt", "tensorrt", (), False, av.tensorrt_error or "tensorrt is not installed")
    elif not av.pycuda:
        native = PlanStep("tensorrt", "tensorrt", (), False, av.pycuda_error or "pycuda is not installed")
    else:
        native = PlanStep("tensorrt", "tensorrt", (), True, f"TensorRT {av.tensorrt_version} with pycuda")
    steps = [
        native,
        ort_step("ort-tensorrt", TRT_EP, (TRT_EP, CUDA_EP, CPU_EP)),
        ort_step("ort-cuda", CUDA_EP, (CUDA_EP, CPU_EP)),
        ort_step("ort-cpu", CPU_EP, (CPU_EP,)),
    ]
    steps = [s if s.label in allowed or not s.usable
             else PlanStep(s.label, s.backend, s.providers, False, "disabled by configuration")
             for s in steps]
    return BackendPlan(profile.hardware_id, prec, prec_reason, tuple(steps))
