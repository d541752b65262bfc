"""Control vs candidate: one ``Comparison`` per frame, by task.

Both sides arrive as ``Prediction`` (see ``prediction.decode``); a comparator never
sees raw tensors, so the control path decodes once and reuses the result for the
application and the triggers.

* ``ClassificationComparator``: disagree when the top-1 labels differ, or when the
  total-variation distance between the two probability vectors (aligned by label
  name) exceeds ``max_distance``.
* ``DetectionComparator``: boxes at or above ``min_score`` are matched greedily by
  score, class-agnostic, at IoU >= ``iou_threshold``; disagree on a matched pair
  whose class changed, or on any unmatched box.
* ``RegressionComparator``: disagree when any value differs by more than
  ``atol + rtol * |control|`` (or the shapes differ).

``Comparison.pairs`` lists (control label, candidate label) for the confusion matrix;
``NONE_LABEL`` stands for "no box" on either side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..protocols import Manifest
from .prediction import Box, Prediction

NONE_LABEL = "<none>"


@dataclass(frozen=True)
class Comparison:
    """The verdict on one frame.

    ``reason`` is ``"agree"`` or why they disagree: ``"top1"``, ``"distance"``,
    ``"class_changed"``, ``"unmatched"``, ``"tolerance"``, ``"shape"``, ``"non_finite"``.
    ``label`` is the class the verdict is attributed to (control's top label, or for
    detection the first disagreeing box's control label, else candidate label).
    ``distance`` is task-specific in [0, 1] (classification, detection) or the max
    absolute difference (regression).
    """

    agree: bool
    reason: str
    task: str
    control_label: str | None = None
    control_score: float | None = None
    candidate_label: str | None = None
    candidate_score: float | None = None
    distance: float = 0.0
    label: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()


class Comparator(Protocol):
    def compare(self, control: Prediction, candidate: Prediction) -> Comparison: ...


def _non_finite(task: str, control: Prediction, candidate: Prediction) -> Comparison:
    return Comparison(
        agree=False, reason="non_finite", task=task,
        control_label=control.label, control_score=control.score,
        candidate_label=candidate.label, candidate_score=candidate.score,
        distance=1.0, label=control.label,
    )


@dataclass(frozen=True)
class ClassificationComparator:
    """Top-1 label, then total-variation distance (``None`` disables the distance test)."""

    max_distance: float | None = 0.5

    def compare(self, control: Prediction, candidate: Prediction) -> Comparison:
        if not (control.finite and candidate.finite) or control.probs is None or candidate.probs is None:
            return _non_finite("classification", control, candidate)
        dist = total_variation(control, candidate)
        if control.label != candidate.label:
            reason = "top1"
        elif self.max_distance is not None and dist > self.max_distance:
            reason = "distance"
        else:
            reason = "agree"
        return Comparison(
            agree=reason == "agree", reason=reason, task="classification",
            control_label=control.label, control_score=control.score,
            candidate_label=candidate.label, candidate_score=candidate.score,
            distance=dist, label=control.label,
            pairs=((str(control.label), str(candidate.label)),),
        )


def total_variation(a: Prediction, b: Prediction) -> float:
    """0.5 * L1 distance between two probability vectors, aligned by label name."""
    assert a.probs is not None and b.probs is not None
    if a.labels == b.labels:
        return float(0.5 * np.abs(a.probs - b.probs).sum())
    pa = dict(zip(a.labels, a.probs.tolist()))
    pb = dict(zip(b.labels, b.probs.tolist()))
    return float(0.5 * sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in set(pa) | set(pb)))


def iou(a: Box, b: Box) -> float:
    iw = min(a.x2, b.x2) - max(a.x1, b.x1)
    ih = min(a.y2, b.y2) - max(a.y1, b.y1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class DetectionComparator:
    """Greedy IoU matching of boxes scoring at least ``min_score``."""

    iou_threshold: float = 0.5
    min_score: float = 0.3

    def compare(self, control: Prediction, candidate: Prediction) -> Comparison:
        if not (control.finite and candidate.finite):
            return _non_finite("detection", control, candidate)
        cb = [b for b in control.boxes if b.score >= self.min_score]
        kb = [b for b in candidate.boxes if b.score >= self.min_score]
        used = [False] * len(kb)
        pairs: list[tuple[str, str]] = []
        changed: list[str] = []
        unmatched: list[str] = []
        agreeing = 0
        for c in cb:  # boxes come sorted by score, highest first
            best, best_iou = -1, self.iou_threshold
            for j, k in enumerate(kb):
                if not used[j]:
                    v = iou(c, k)
                    if v >= best_iou:
                        best, best_iou = j, v
            if best < 0:
                pairs.append((c.label, NONE_LABEL))
                unmatched.append(c.label)
                continue
            used[best] = True
            pairs.append((c.label, kb[best].label))
            if kb[best].class_id != c.class_id:
                changed.append(c.label)
            else:
                agreeing += 1
        for j, k in enumerate(kb):
            if not used[j]:
                pairs.append((NONE_LABEL, k.label))
                unmatched.append(k.label)
        total = len(cb) + len(kb)
        distance = 0.0 if total == 0 else 1.0 - 2.0 * agreeing / total
        label: str | None
        if changed:
            reason, label = "class_changed", changed[0]
        elif unmatched:
            reason, label = "unmatched", unmatched[0]
        else:
            reason, label = "agree", control.label
        return Comparison(
            agree=reason == "agree", reason=reason, task="detection",
            control_label=control.label, control_score=control.score,
            candidate_label=candidate.label, candidate_score=candidate.score,
            distance=distance, label=label, pairs=tuple(pairs),
        )


@dataclass(frozen=True)
class RegressionComparator:
    """Element-wise tolerance ``|a - b| <= atol + rtol * |a|``."""

    atol: float = 1e-2
    rtol: float = 0.0

    def compare(self, control: Prediction, candidate: Prediction) -> Comparison:
        a, b = control.values, candidate.values
        if a is None or b is None or a.shape != b.shape:
            return Comparison(agree=False, reason="shape", task="regression", distance=float("inf"))
        if not (control.finite and candidate.finite):
            return _non_finite("regression", control, candidate)
        diff = np.abs(a - b)
        dist = float(diff.max()) if diff.size else 0.0
        ok = bool(np.all(diff <= self.atol + self.rtol * np.abs(a)))
        return Comparison(
            agree=ok, reason="agree" if ok else "tolerance", task="regression", distance=dist
        )


def comparator_for(
    manifest_or_task: Manifest | str,
    *,
    max_distance: float | None = 0.5,
    iou_threshold: float = 0.5,
    min_score: float = 0.3,
    atol: float = 1e-2,
    rtol: float = 0.0,
) -> ClassificationComparator | DetectionComparator | RegressionComparator:
    """The comparator for a manifest's task (or a task name), with its thresholds.

    Raises:
        ValueError: an unknown task name.
    """
    task = manifest_or_task if isinstance(manifest_or_task, str) else manifest_or_task.task
    if task == "classification":
        return ClassificationComparator(max_distance=max_distance)
    if task == "detection":
        return DetectionComparator(iou_threshold=iou_threshold, min_score=min_score)
    if task == "regression":
        return RegressionComparator(atol=atol, rtol=rtol)
    raise ValueError(f"unknown task {task!r}")
