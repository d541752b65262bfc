"""One loaded model ready for frames: preprocess → backend → decoded ``Prediction``.

``ModelRunner.load`` opens the backend for an unpacked bundle and checks the model
against its manifest (input name, shape, dtype) before anything else may use it;
``self_test`` runs the bundle's test vectors and compares with the expected outputs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..hardware import HardwareError, InferenceBackend, open_backend
from ..protocols import Manifest, ModelRef
from ..shadow.errors import OutputDecodeError
from ..shadow.prediction import Prediction, decode, embedding_index, primary_index
from ..shadow.preprocess import make_preprocessor
from .errors import InputMismatch, ModelLoadFailed, SelfTestFailed


def _dims_match(declared: list[int | None], actual: tuple[int | str | None, ...]) -> bool:
    if len(declared) != len(actual):
        return False
    return all(d is None or not isinstance(a, int) or a <= 0 or d == a for d, a in zip(declared, actual))


@dataclass
class Inference:
    prediction: Prediction
    latency_ms: float


class ModelRunner:
    def __init__(self, ref: ModelRef, manifest: Manifest, backend: InferenceBackend, directory: Path):
        self.ref = ref
        self.manifest = manifest
        self.backend = backend
        self.directory = directory
        self.input_name = manifest.input.name
        self.preprocess = make_preprocessor(manifest)
        # the manifest's embedding output among the backend's outputs (load() checked it exists)
        self.output_names = [o.name for o in backend.outputs]
        self.embedding_at = embedding_index(self.output_names, manifest)
        self.primary_at = primary_index(self.output_names, manifest)  # by name where it has several

    @classmethod
    def load(cls, ref: ModelRef, manifest: Manifest, directory: Path, *, threads: int = 1, **backend_options: Any) -> ModelRunner:
        """Open and check a model with the best backend for this device.

        ``backend_options`` go to ``hardware.open_backend`` (profile, cache_dir, progress,
        ``background=True`` for the shadow slot, …); the bundle digest is the engine-cache key.

        Raises:
            ModelLoadFailed: no backend can load it. InputMismatch: it does not fit its manifest.
        """
        try:
            backend = open_backend(
                directory / manifest.model_file, intra_op_threads=threads, model_digest=ref.digest, **backend_options
            )
        except HardwareError as exc:
            raise ModelLoadFailed(f"{ref.label}: {exc}") from None
        inputs = backend.inputs
        if len(inputs) != 1:
            backend.close()
            raise InputMismatch(f"{ref.label}: model has {len(inputs)} inputs, expected 1")
        spec = inputs[0]
        if spec.name != manifest.input.name or not _dims_match(manifest.input.shape, spec.shape) or spec.dtype != manifest.input.dtype:
            backend.close()
            raise InputMismatch(
                f"{ref.label}: manifest input {manifest.input.name}{manifest.input.shape} {manifest.input.dtype} "
                f"but the model takes {spec.name}{list(spec.shape)} {spec.dtype}"
            )
        try:
            return cls(ref, manifest, backend, directory)
        except OutputDecodeError as exc:
            backend.close()
            raise InputMismatch(f"{ref.label}: {exc}") from None

    def prepare(self) -> None:
        self.backend.prepare()

    def infer_tensor(self, tensor: np.ndarray) -> list[np.ndarray]:
        return self.backend.infer({self.input_name: tensor})

    def predict(self, frame: np.ndarray) -> Inference:
        t0 = time.perf_counter()
        tensor = self.preprocess(frame)
        outputs = self.backend.infer({self.input_name: tensor})
        prediction = decode(outputs, self.manifest, self.output_names if len(outputs) > 1 else None)
        if self.embedding_at is not None:
            prediction = replace(prediction, embedding=np.asarray(outputs[self.embedding_at], dtype=np.float32).ravel())
        return Inference(prediction, (time.perf_counter() - t0) * 1000.0)

    def self_test(self) -> int:
        """Run the manifest's test vectors; returns how many passed (all, or raises)."""
        shape = [d if d is not None else 1 for d in self.manifest.input.shape]
        for i, vector in enumerate(self.manifest.test_vectors):
            x = np.asarray(vector.input, dtype=self.manifest.input.dtype)
            if x.size != math.prod(shape):
                raise SelfTestFailed(f"{self.ref.label}: test vector {i} has {x.size} values, input needs {math.prod(shape)}")
            try:
                out = self.infer_tensor(x.reshape(shape))
            except HardwareError as exc:
                raise SelfTestFailed(f"{self.ref.label}: test vector {i} failed to run: {exc}") from None
            got = np.asarray(out[self.primary_at if len(out) > 1 else 0], dtype=np.float64).ravel()
            want = np.asarray(vector.expected, dtype=np.float64)
            if got.shape != want.shape or not np.all(np.isfinite(got)) or not np.allclose(got, want, atol=vector.atol, rtol=0):
                diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
                raise SelfTestFailed(
                    f"{self.ref.label}: test vector {i} output differs from expected (max abs diff {diff:.3g} > atol {vector.atol})"
                )
        return len(self.manifest.test_vectors)

    def close(self) -> None:
        self.backend.close()
