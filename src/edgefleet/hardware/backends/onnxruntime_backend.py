"""ONNX Runtime backend: TensorRT, CUDA or CPU execution provider behind one interface.

``provider_options(...)`` turns a plan step, the profile and the engine-cache directory
into ONNX Runtime's ``providers`` list (TensorRT provider with engine and timing caches,
CUDA provider, CPU). ``OnnxRuntimeBackend`` opens one session, checks that the provider
asked for first is the one ONNX Runtime actually took (it falls back silently otherwise),
and runs ``session.run`` with nothing else on the hot path.

A *background* session (the shadow model) is opened so it cannot crowd the control
model's core: one intra-op and one inter-op thread (the work runs on the calling thread,
which has lowered itself to ``SCHED_IDLE``), sequential execution, and thread-pool
spinning off (``session.intra_op.allow_spinning = "0"``), so an idle ORT worker never
burns a core waiting for the next frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InferenceError, ModelLoadError
from .base import InferenceBackend, IOSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(double)": "float64",
    "tensor(bool)": "bool",
}

ProviderList = Sequence["str | tuple[str, dict[str, Any]]"]
Progress = Callable[[float, str], None]


def _flag(value: bool) -> str:
    return "True" if value else "False"


def tensorrt_provider_options(
    *,
    precision: str,
    engine_cache_dir: str | os.PathLike[str],
    timing_cache_dir: str | os.PathLike[str],
    device_id: int = 0,
    workspace_mb: int = 1024,
    dla_core: int | None = None,
) -> dict[str, str]:
    """Options of ONNX Runtime's TensorRT execution provider (names as in its docs)."""
    opts = {
        "device_id": str(device_id),
        "trt_max_workspace_size": str(workspace_mb * 1024 * 1024),
        "trt_fp16_enable": _flag(precision in ("fp16", "int8")),
        "trt_int8_enable": _flag(precision == "int8"),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": os.fspath(engine_cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": os.fspath(timing_cache_dir),
    }
    if dla_core is not None:
        opts["trt_dla_enable"] = "True"
        opts["trt_dla_core"] = str(dla_core)
    return opts


def cuda_provider_options(*, device_id: int = 0, unified_memory: bool = False,
                          gpu_mem_limit_mb: int | None = None) -> dict[str, str]:
    """Options of the CUDA execution provider. On Jetson (unified memory) the arena grows
    only as needed and heuristic cuDNN search avoids long exhaustive tuning at start-up."""
    opts = {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": "HEURISTIC" if unified_memory else "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested" if unified_memory else "kNextPowerOfTwo",
    }
    if gpu_mem_limit_mb:
        opts["gpu_mem_limit"] = str(gpu_mem_limit_mb * 1024 * 1024)
    return opts


SPINNING_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def background_session_config(*, allow_spinning: bool = False) -> dict[str, str]:
    """Session config entries of a background (shadow) session (names as in ONNX Runtime's
    ``onnxruntime_session_options_config_keys.h``)."""
    value = "1" if allow_spinning else "0"
    return {key: value for key in SPINNING_KEYS}


def _concrete_shape(shape: Sequence[object]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape)


class OnnxRuntimeBackend(InferenceBackend):
    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        providers: ProviderList | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        require_provider: str | None = None,
        progress: Progress | None = None,
        background: bool = False,
        allow_spinning: bool = False,
    ):
        """Open a session.

        Args:
            providers: ONNX Runtime providers, with options; CPU when None.
            intra_op_threads: threads inside one operator (0 = ONNX Runtime's default).
            require_provider: raise ``BackendUnavailable`` when ONNX Runtime did not take
                this provider (it falls back to the next one without saying so).
            progress: called with (fraction, message) while the session is created; the
                TensorRT provider builds its engines here.
            background: a shadow session: 1 intra-op and 1 inter-op thread, sequential
                execution, spinning as ``allow_spinning`` (off by default).
            allow_spinning: for a background session only (``[pipeline] ort_allow_spinning``).

        Raises:
            ModelLoadError: the model cannot be loaded.
            BackendUnavailable: ``require_provider`` was not taken.
        """
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1 if background else intra_op_threads
        opts.inter_op_num_threads = 1 if background else inter_op_threads
        opts.log_severity_level = 3
        self.background = background
        if background:
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            for key, value in background_session_config(allow_spinning=allow_spinning).items():
                opts.add_session_config_entry(key, value)
        self.model_path = Path(model_path)
        if progress:
            progress(0.0, f"opening ONNX Runtime session ({require_provider or 'CPUExecutionProvider'})")
        try:
            self._session = ort.InferenceSession(
                os.fspath(model_path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # ORT raises several private exception types
            raise ModelLoadError(f"ONNX Runtime cannot load {os.fspath(model_path)!r}: {exc}") from exc
        self.providers = self._session.get_providers()
        if require_provider and require_provider not in self.providers:
            self._session = None  # type: ignore[assignment]
            raise BackendUnavailable(
                f"ONNX Runtime did not take {require_provider} (session providers: {self.providers})"
            )
        self.session_options = self._session.get_session_options()  # as the session holds them
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._inputs = [IOSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type))
                        for i in self._session.get_inputs()]
        self._outputs = [IOSpec(o.name, tuple(o.shape), _ORT_TYPES.get(o.type, o.type))
                         for o in self._session.get_outputs()]
        self.provider = self.providers[0]
        if progress:
            progress(1.0, "session ready")

    @property
    def inputs(self) -> list[IOSpec]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[IOSpec]:
        return list(self._outputs)

    def prepare(self) -> None:
        """Warm up with one zero batch (dynamic dimensions as 1) so the first real frame
        does not pay for allocation or lazy engine builds."""
        feeds = {s.name: np.zeros(_concrete_shape(s.shape), dtype=np.dtype(s.dtype)) for s in self._inputs}
        self.infer(feeds)

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, feeds)
        except Exception as exc:
            raise InferenceError(f"inference failed: {exc}") from exc

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
