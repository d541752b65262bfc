"""ONNX Runtime backend (CPU here; TensorRT/CUDA execution providers where present)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import InferenceError, ModelLoadError
from .base import InferenceBackend, IOSpec

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(double)": "float64",
}


class OnnxRuntimeBackend(InferenceBackend):
    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        providers: Sequence[str | tuple[str, dict]] | None = None,
        intra_op_threads: int = 1,
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                os.fspath(model_path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # ORT raises several private exception types
            raise ModelLoadError(f"ONNX Runtime cannot load {os.fspath(model_path)!r}: {exc}") from exc
        self.providers = self._session.get_providers()
        self._output_names = [o.name for o in self._session.get_outputs()]

    @property
    def inputs(self) -> list[IOSpec]:
        return [IOSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in self._session.get_inputs()]

    @property
    def outputs(self) -> list[IOSpec]:
        return [IOSpec(o.name, tuple(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in self._session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, feeds)
        except Exception as exc:
            raise InferenceError(f"inference failed: {exc}") from exc

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
