"""Raw model outputs → a typed ``Prediction``, per the manifest's task.

The backend hands back ``list[np.ndarray]`` in the model's output order; this module
reads the primary output (classification, detection) or all of them (regression). Given
the outputs' names (``decode(..., names=...)``), the primary output is the one the
manifest's ``output`` names, else the first that is not its ``embedding`` output — a model
with several outputs never has its embedding read as class scores. Without names, the
first output:

* classification: a vector of ``len(manifest.labels)`` class scores, optionally with a
  leading batch dimension of 1. ``output_kind="logits"`` is put through a stable
  softmax; ``"probabilities"`` is used as given.
* detection: an array ``[N, 6]`` (or ``[1, N, 6]``) with rows
  ``x1, y1, x2, y2, score, class_id``. Both models of a comparison must use the same
  coordinate frame (pixels of the model input, or normalised). Class ids index
  ``manifest.labels`` where given, else the id itself is the label.
* regression: every output flattened and concatenated into one float vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..protocols import Manifest, ModelOutput, ModelRef
from .errors import OutputDecodeError

Task = Literal["classification", "detection", "regression"]


@dataclass(frozen=True)
class Box:
    """One detection, in the model's coordinate frame."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    label: str


@dataclass(frozen=True, eq=False)
class Prediction:
    """One model's decoded output for one frame.

    ``label``/``score`` are the top-1 class and its probability (classification) or the
    highest-scoring box (detection); both are ``None`` for regression and for a
    detection without boxes. ``probs`` is the full probability vector in ``labels``
    order (classification only), ``boxes`` the detections sorted by score descending,
    ``values`` the regression vector.
    """

    task: Task
    label: str | None = None
    score: float | None = None
    labels: tuple[str, ...] = ()
    probs: np.ndarray | None = None
    boxes: tuple[Box, ...] = ()
    values: np.ndarray | None = None
    finite: bool = True
    embedding: np.ndarray | None = None  # the manifest's embedding output (float32, flat), if it names one

    def to_model_output(self, model: ModelRef | None = None, *, max_scores: int = 32) -> ModelOutput:
        """The wire form (``protocols.ModelOutput``); ``scores`` holds at most ``max_scores``
        values rounded to 4 decimals: class probabilities in label order, box scores
        (descending) for detection, values for regression."""
        if self.task == "classification" and self.probs is not None:
            raw = self.probs
        elif self.task == "detection":
            raw = np.array([b.score for b in self.boxes], dtype=np.float64)
        else:
            raw = self.values if self.values is not None else np.zeros(0)
        scores = [round(float(v), 4) for v in np.asarray(raw).ravel()[: max(0, max_scores)]]
        scores = [s if np.isfinite(s) else 0.0 for s in scores]
        score = None if self.score is None else round(float(self.score), 4)
        return ModelOutput(model=model, label=self.label, score=score, scores=scores)


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis (float64)."""
    z = np.asarray(x, dtype=np.float64)
    z = z - np.max(z, axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= np.sum(z, axis=-1, keepdims=True)
    return z


def _vector(arr: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(arr)
    while a.ndim > 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 1:
        raise OutputDecodeError(f"{what}: expected a vector (batch of 1), got shape {np.shape(arr)}")
    return a


def decode_classification(
    outputs: Sequence[np.ndarray], labels: Sequence[str], output_kind: str = "probabilities"
) -> Prediction:
    if not outputs:
        raise OutputDecodeError("classification: the model returned no outputs")
    vec = _vector(outputs[0], "classification")
    if len(labels) and vec.shape[0] != len(labels):
        raise OutputDecodeError(
            f"classification: {vec.shape[0]} scores but the manifest has {len(labels)} labels"
        )
    names = tuple(labels) if len(labels) else tuple(str(i) for i in range(vec.shape[0]))
    finite = bool(np.all(np.isfinite(vec)))
    if output_kind == "logits":
        probs = softmax(vec) if finite else np.full(vec.shape, np.nan)
    else:
        probs = np.asarray(vec, dtype=np.float64)
    if not finite or probs.size == 0:
        return Prediction("classification", labels=names, probs=probs, finite=finite)
    top = int(np.argmax(probs))
    return Prediction(
        "classification", label=names[top], score=float(probs[top]), labels=names, probs=probs
    )


def decode_detection(outputs: Sequence[np.ndarray], labels: Sequence[str] = ()) -> Prediction:
    if not outputs:
        raise OutputDecodeError("detection: the model returned no outputs")
    a = np.asarray(outputs[0])
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.size == 0:
        return Prediction("detection", labels=tuple(labels))
    if a.ndim != 2 or a.shape[1] < 6:
        raise OutputDecodeError(
            f"detection: expected rows of x1,y1,x2,y2,score,class ([N, 6]), got shape {np.shape(outputs[0])}"
        )
    finite = bool(np.all(np.isfinite(a[:, :6])))
    rows = a[np.all(np.isfinite(a[:, :6]), axis=1)]
    order = np.argsort(-rows[:, 4], kind="stable")
    boxes = []
    for r in rows[order]:
        cid = int(r[5])
        name = labels[cid] if 0 <= cid < len(labels) else str(cid)
        boxes.append(Box(float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), cid, name))
    top = boxes[0] if boxes else None
    return Prediction(
        "detection",
        label=top.label if top else None,
        score=top.score if top else None,
        labels=tuple(labels),
        boxes=tuple(boxes),
        finite=finite,
    )


def decode_regression(outputs: Sequence[np.ndarray]) -> Prediction:
    if not outputs:
        raise OutputDecodeError("regression: the model returned no outputs")
    values = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in outputs])
    return Prediction("regression", values=values, finite=bool(np.all(np.isfinite(values))))


def embedding_index(output_names: Sequence[str], manifest: Manifest) -> int | None:
    """Where the manifest's embedding output sits among the backend's outputs (None: it names none).

    Raises:
        OutputDecodeError: the manifest names an output the model does not have.
    """
    if manifest.embedding is None:
        return None
    names = list(output_names)
    if manifest.embedding.output not in names:
        raise OutputDecodeError(f"manifest embedding output {manifest.embedding.output!r} is not among the "
                                f"model's outputs {names}")
    return names.index(manifest.embedding.output)


def split_outputs(outputs: Sequence[np.ndarray], index: int | None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """(the outputs the task decodes, the flat float32 embedding or None) — ``index`` from
    ``embedding_index``. ONNX Runtime and TensorRT both return every output in ``outputs`` order."""
    if index is None:
        return list(outputs), None
    emb = np.asarray(outputs[index], dtype=np.float32).ravel()
    return [o for i, o in enumerate(outputs) if i != index], emb


def primary_index(output_names: Sequence[str], manifest: Manifest) -> int:
    """Where the task's output sits among the model's outputs: the one ``manifest.output``
    names, else the first that is not the manifest's embedding output (else the first)."""
    names = list(output_names)
    if manifest.output is not None and manifest.output.name in names:
        return names.index(manifest.output.name)
    emb = manifest.embedding.output if manifest.embedding is not None else None
    return next((i for i, n in enumerate(names) if n != emb), 0)


def task_outputs(outputs: Sequence[np.ndarray], names: Sequence[str], manifest: Manifest) -> list[np.ndarray]:
    """The outputs the task decodes, picked by name: the primary one (classification,
    detection), or every output but the embedding (regression)."""
    if len(names) != len(outputs):
        raise OutputDecodeError(f"the model returned {len(outputs)} outputs for {len(names)} output names")
    if manifest.task == "regression":
        emb = manifest.embedding.output if manifest.embedding is not None else None
        return [o for o, n in zip(outputs, names) if n != emb]
    return [outputs[primary_index(names, manifest)]]


def decode(outputs: Sequence[np.ndarray], manifest: Manifest, names: Sequence[str] | None = None) -> Prediction:
    """Decode one frame's raw outputs per ``manifest.task``; with ``names`` (the outputs'
    names, in order) the task's output is picked by name (``task_outputs``).

    Raises:
        OutputDecodeError: the outputs do not have the shape the task needs.
    """
    if names is not None:
        outputs = task_outputs(outputs, names, manifest)
    if manifest.task == "classification":
        return decode_classification(outputs, manifest.labels, manifest.output_kind)
    if manifest.task == "detection":
        return decode_detection(outputs, manifest.labels)
    return decode_regression(outputs)
