"""Native TensorRT backend (tensorrt + pycuda), written against TensorRT 8.6 and 10.

Flow: ``EngineCache.get_or_build`` → (on a miss) parse the ONNX file with ``OnnxParser``,
configure the builder (workspace pool, FP16/INT8 as the plan allows, DLA when asked,
an optimization profile for a dynamic batch dimension, the shared timing cache),
``build_serialized_network`` → store → ``Runtime.deserialize_cuda_engine`` →
``create_execution_context``. ``infer`` copies inputs into page-locked host buffers,
``memcpy_htod_async`` on a CUDA stream, binds every I/O tensor with
``set_tensor_address``, ``execute_async_v3``, copies outputs back asynchronously and
synchronizes the stream once.

tensorrt and pycuda are imported lazily: on a machine without them constructing the
backend raises ``BackendUnavailable`` with the reason, and nothing else in edgefleet
imports this module's dependencies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import EngineCache, file_digest
from ..errors import BackendUnavailable, EngineBuildError, InferenceError, ModelLoadError
from .base import InferenceBackend, IOSpec

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or ``BackendUnavailable`` saying which one is missing."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as exc:
        raise BackendUnavailable(f"tensorrt cannot be imported: {type(exc).__name__}: {exc}") from exc
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found]
    except Exception as exc:
        raise BackendUnavailable(f"pycuda cannot be imported: {type(exc).__name__}: {exc}") from exc
    return trt, cuda


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _make_progress_monitor(trt: Any, progress: Progress) -> Any | None:
    """An ``IProgressMonitor`` (TensorRT ≥ 8.6/10) that maps top-level build phases onto
    0.1‥0.95 of ``progress``; None where this TensorRT has no progress monitor."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._top: str | None = None

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                self._top = phase_name
                self._steps[phase_name] = max(1, num_steps)
                progress(0.1, f"TensorRT: {phase_name}")

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name == self._top:
                frac = (step + 1) / self._steps.get(phase_name, 1)
                progress(0.1 + 0.85 * min(1.0, frac), f"TensorRT: {phase_name} {step + 1}/{self._steps[phase_name]}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            pass

    return _Monitor()


def build_serialized_engine(
    trt: Any,
    logger: Any,
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    workspace_mb: int = 1024,
    max_batch: int = 1,
    dla_core: int | None = None,
    timing_cache: bytes | None = None,
    progress: Progress | None = None,
) -> tuple[bytes, bytes | None]:
    """Parse an ONNX file and build a serialized engine.

    Returns:
        (engine bytes, updated timing cache bytes or None).

    Raises:
        ModelLoadError: the ONNX parser refused the model.
        EngineBuildError: the builder returned no engine.
    """
    report = progress or (lambda _f, _m: None)
    builder = trt.Builder(logger)
    flags = 0
    if trt_major(trt) < 10:  # explicit batch is the only mode in TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"TensorRT cannot parse {os.fspath(onnx_path)!r}: {errors}")
    report(0.05, "ONNX parsed")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb * 1024 * 1024)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        # Explicitly quantized (Q/DQ) models need only the flag; others fall back to FP16
        # per layer because no calibrator is configured.
        config.set_flag(trt.BuilderFlag.INT8)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    opt_profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        if any(d < 0 for d in shape[1:]):
            raise ModelLoadError(
                f"input {tensor.name!r} has dynamic non-batch dimensions {shape}; export with fixed sizes"
            )
        opt_profile = opt_profile or builder.create_optimization_profile()
        one = (1, *shape[1:])
        opt_profile.set_shape(tensor.name, one, one, (max_batch, *shape[1:]))
    if opt_profile is not None:
        config.add_optimization_profile(opt_profile)

    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = _make_progress_monitor(trt, report) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine for {os.fspath(onnx_path)!r} ({precision})")
    new_cache = config.get_timing_cache()
    timing = bytes(new_cache.serialize()) if new_cache is not None else None
    return bytes(serialized), timing


# CUDA stream priorities: a lower number is more urgent; 0 is the least urgent (and the
# default), the most urgent is -1 … -5 by device, and a value outside the device's range is
# clamped to it (cuStreamCreateWithPriority). The control engine asks for the most urgent,
# the shadow engine for the least, so the GPU schedules the control model's kernels first.
STREAM_PRIORITIES = {"high": -100, "low": 0}
_priority_warned = False


def make_stream(cuda: Any, priority: str | None) -> tuple[Any, int | None]:
    """A pycuda stream with ``priority`` (``high``/``low``/None); returns (stream, value
    applied or None where this pycuda cannot create prioritised streams)."""
    global _priority_warned
    if priority is None:
        return cuda.Stream(), None
    value = STREAM_PRIORITIES[priority]
    try:
        return cuda.Stream(flags=0, priority=value), value
    except TypeError as exc:  # a pycuda whose Stream takes only flags
        if not _priority_warned:
            _priority_warned = True
            log.warning("pycuda cannot create streams with a priority (%s): the shadow engine shares "
                        "the GPU's default priority with the control engine", exc)
        return cuda.Stream(), None


class TensorRTBackend(InferenceBackend):
    """A TensorRT engine on one CUDA device, fed through page-locked buffers on one stream."""

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        cache: EngineCache,
        model_digest: str | None = None,
        precision: str = "fp16",
        workspace_mb: int = 1024,
        max_batch: int = 1,
        dla_core: int | None = None,
        device_id: int = 0,
        progress: Progress | None = None,
        stream_priority: str | None = None,
    ):
        """Load the cached engine for this model, or build it (minutes on an Orin).

        ``stream_priority``: ``high`` for the control engine, ``low`` for the shadow engine
        (see ``STREAM_PRIORITIES``), None for CUDA's default.

        Raises:
            BackendUnavailable: tensorrt or pycuda missing, or no CUDA device.
            ModelLoadError / EngineBuildError: TensorRT cannot take this model.
        """
        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self.model_path = Path(model_path)
        self.precision = precision
        report = progress or (lambda _f, _m: None)
        try:
            cuda.init()
            self._device = cuda.Device(device_id)
            self._ctx = self._device.retain_primary_context()
        except Exception as exc:
            raise BackendUnavailable(f"no usable CUDA device {device_id}: {exc}") from exc
        major, minor = self._device.compute_capability()
        self.compute_capability = f"{major}.{minor}"
        self._ctx.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            trt.init_libnvinfer_plugins(self._logger, "")
            self._runtime = trt.Runtime(self._logger)
            digest = model_digest or file_digest(self.model_path)
            self.key = cache.key(model_digest=digest, trt_version=trt.__version__,
                                 compute_capability=self.compute_capability, precision=precision,
                                 backend="tensorrt", workspace_mb=workspace_mb, max_batch=max_batch,
                                 dla_core=dla_core)
            timing_path = cache.timing_cache_path(trt.__version__, self.compute_capability)

            def build() -> bytes:
                report(0.0, f"building TensorRT engine ({precision}) for {self.model_path.name}")
                timing = timing_path.read_bytes() if timing_path.exists() else None
                engine, new_timing = build_serialized_engine(
                    trt, self._logger, self.model_path, precision=precision, workspace_mb=workspace_mb,
                    max_batch=max_batch, dla_core=dla_core, timing_cache=timing, progress=report)
                if new_timing:
                    tmp = timing_path.with_suffix(".tmp")
                    try:
                        timing_path.parent.mkdir(parents=True, exist_ok=True)
                        tmp.write_bytes(new_timing)
                        os.replace(tmp, timing_path)
                    except OSError as exc:  # a timing cache is an optimisation: a full disk skips it
                        tmp.unlink(missing_ok=True)
                        log.warning("TensorRT timing cache not saved to %s: %s", timing_path, exc)
                return engine

            try:
                self._engine, self.built = cache.get_or_build(self.key, build, self._runtime.deserialize_cuda_engine)
            except ValueError as exc:
                raise EngineBuildError(str(exc)) from exc
            self._context = self._engine.create_execution_context()
            self._stream, self.stream_priority = make_stream(cuda, stream_priority)
            self._io = self._collect_io()
            self._host: dict[str, Any] = {}
            self._dev: dict[str, Any] = {}
            self._nbytes: dict[str, int] = {}
            self._bound_shapes: dict[str, tuple[int, ...]] = {}
            report(1.0, "TensorRT engine ready" + (" (built)" if self.built else " (from cache)"))
        except BaseException:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
            raise
        self._ctx.pop()

    def _collect_io(self) -> tuple[list[IOSpec], list[IOSpec]]:
        trt, eng = self._trt, self._engine
        ins: list[IOSpec] = []
        outs: list[IOSpec] = []
        for i in range(eng.num_io_tensors):
            name = eng.get_tensor_name(i)
            shape = tuple(int(d) if d >= 0 else None for d in eng.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(eng.get_tensor_dtype(name))).name
            spec = IOSpec(name, shape, dtype)
            (ins if eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(spec)
        return ins, outs

    @property
    def inputs(self) -> list[IOSpec]:
        return list(self._io[0])

    @property
    def outputs(self) -> list[IOSpec]:
        return list(self._io[1])

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> tuple[Any, Any]:
        """Page-locked host array and device allocation for one tensor, grown on demand."""
        cuda = self._cuda
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if self._nbytes.get(name, -1) < nbytes:
            self._dev[name] = cuda.mem_alloc(max(nbytes, 1))
            self._nbytes[name] = nbytes
        host = self._host.get(name)
        if host is None or host.shape != shape:
            host = cuda.pagelocked_empty(shape, dtype)
            self._host[name] = host
        return host, self._dev[name]

    def prepare(self) -> None:
        """Warm up: one batch of zeros (batch 1) through the engine."""
        feeds = {s.name: np.zeros(tuple(d if isinstance(d, int) and d > 0 else 1 for d in s.shape),
                                  dtype=np.dtype(s.dtype)) for s in self._io[0]}
        self.infer(feeds)

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cuda, ctx, stream = self._cuda, self._context, self._stream
        self._ctx.push()
        try:
            for spec in self._io[0]:
                arr = np.ascontiguousarray(feeds[spec.name], dtype=np.dtype(spec.dtype))
                if self._bound_shapes.get(spec.name) != arr.shape:
                    ctx.set_input_shape(spec.name, arr.shape)
                    self._bound_shapes[spec.name] = arr.shape
                host, dev = self._buffer(spec.name, arr.shape, arr.dtype)
                host[...] = arr
                cuda.memcpy_htod_async(dev, host, stream)
                ctx.set_tensor_address(spec.name, int(dev))
            results = []
            for spec in self._io[1]:
                shape = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
                host, dev = self._buffer(spec.name, shape, np.dtype(spec.dtype))
                ctx.set_tensor_address(spec.name, int(dev))
                results.append((host, dev))
            if not ctx.execute_async_v3(stream_handle=stream.handle):
                raise InferenceError("TensorRT execute_async_v3 returned False")
            for host, dev in results:
                cuda.memcpy_dtoh_async(host, dev, stream)
            stream.synchronize()
            return [np.array(host, copy=True) for host, _ in results]
        except KeyError as exc:
            raise InferenceError(f"missing input {exc}") from exc
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError(f"TensorRT inference failed: {exc}") from exc
        finally:
            self._ctx.pop()

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        ctx.push()
        try:
            for dev in self._dev.values():
                dev.free()
            self._dev.clear()
            self._host.clear()
            self._context = None
            self._engine = None
        finally:
            ctx.pop()
            ctx.detach()
            self._ctx = None
