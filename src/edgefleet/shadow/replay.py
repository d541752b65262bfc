"""Offline replay: run control and candidate over recorded frames, before any deployment.

``iter_frames(source)`` yields ``(name, frame)`` from a directory of images (sorted by
file name; .png .jpg .jpeg .bmp .webp .tif .tiff) or from a video file. ``replay``
preprocesses each frame per model (each manifest has its own preprocessing), runs
both callables, decodes, compares with the control manifest's comparator and sums
up an ``AgreementStats``; ``format_report`` prints agreement and the confusion matrix.

Replay also measures what a CI gate needs (``ReplayReport.figures``): each model's
inference time per frame (the two run interleaved on the same frame, first one then the
other in alternating order, after an untimed warm-up, so both see the same load), the
candidate's NaN/Inf outputs and its failures (an exception from the candidate is counted
and the frame is not compared; the control failing is an error of the replay itself). The
clock is passed in (``clock=time.perf_counter``).

The model callables take the input tensor and return the outputs in model order, e.g.
``lambda x: backend.infer({backend.inputs[0].name: x})`` for any hardware backend, or an
ONNX Runtime session: ``lambda x: session.run(None, {name: x})``. A model with several
outputs (class scores and a named embedding) is decoded by output name: wrap it as
``NamedModel(fn, output_names)`` (or pass ``control_outputs``/``candidate_outputs``), and the
manifest's ``output`` — never its ``embedding`` — is read as the scores. This module imports
no backend itself (``shadow`` depends only on ``protocols``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..protocols import Manifest
from .compare import Comparator, Comparison, comparator_for
from .errors import SourceError
from .prediction import decode
from .preprocess import make_preprocessor
from .stats import AgreementStats

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
Model = Callable[[np.ndarray], Sequence[np.ndarray]]
FrameItem = Union[np.ndarray, tuple[str, np.ndarray]]


@dataclass(frozen=True)
class NamedModel:
    """A model callable with its outputs' names, in the order it returns them."""

    fn: Model
    output_names: tuple[str, ...]

    def __call__(self, x: np.ndarray) -> Sequence[np.ndarray]:
        return self.fn(x)


def _names(model: Model, given: Sequence[str] | None) -> list[str] | None:
    if given is not None:
        return list(given)
    names = getattr(model, "output_names", None)
    return list(names) if names is not None and len(names) > 1 else None


@dataclass(frozen=True)
class ReplayDisagreement:
    index: int
    name: str
    comparison: Comparison


@dataclass
class ReplayReport:
    frames: int
    stats: AgreementStats
    per_class_counts: dict[str, int]
    disagreements: list[ReplayDisagreement] = field(default_factory=list)
    #: inference time per frame (ms), in frame order; the candidate's only where it answered
    control_ms: list[float] = field(default_factory=list)
    candidate_ms: list[float] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        return self.stats.agreement

    @property
    def nan_outputs(self) -> int:
        return self.stats.nan_outputs

    @property
    def errors(self) -> int:
        return self.stats.errors

    def figures(self) -> dict[str, float | None]:
        """What a replay gate reads: agreement, nan_rate (NaN/Inf outputs / compared
        frames), error_rate (failures / frames given, as the agent counts it), each model's
        p99 in ms (nearest rank) and latency_p99_ratio (candidate p99 / control p99).
        None where there is nothing to measure."""
        compared, errors = self.stats.compared, self.stats.errors
        p99_cand, p99_ctl = percentile(self.candidate_ms, 0.99), percentile(self.control_ms, 0.99)
        return {
            "agreement": self.agreement,
            "nan_rate": self.stats.nan_outputs / compared if compared else None,
            "error_rate": errors / (compared + errors) if compared + errors else None,
            "p99_ms": p99_cand,
            "control_p99_ms": p99_ctl,
            "latency_p99_ratio": p99_cand / p99_ctl if p99_cand is not None and p99_ctl else None,
        }

    @property
    def confusion(self) -> dict[str, dict[str, int]]:
        """``[control_label][candidate_label] -> count``."""
        return self.stats.confusion_matrix()

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "agreement": self.agreement,
            "disagreements": self.stats.disagreements,
            "per_class_counts": dict(self.per_class_counts),
            "per_class_disagreements": dict(sorted(self.stats.per_class_disagreements.items())),
            "confusion": self.confusion,
            "nan_outputs": self.stats.nan_outputs,
            "errors": self.stats.errors,
            "figures": self.figures(),
            "examples": [
                {"index": d.index, "name": d.name, "reason": d.comparison.reason,
                 "control": d.comparison.control_label, "candidate": d.comparison.candidate_label}
                for d in self.disagreements
            ],
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q`` quantile (0..1) of ``values``; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def iter_frames(source: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Frames (uint8 BGR) from a directory of images, sorted by name, or a video file.

    Raises:
        SourceError: the source does not exist, holds no images, or cannot be decoded.
    """
    import cv2

    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise SourceError(f"{f}: cannot decode image")
            yield f.name, img
        return
    if not path.is_file():
        raise SourceError(f"{path}: no such file or directory")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"{path}: cannot open as video")
    try:
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield f"{path.name}#{i}", img
            i += 1
        if i == 0:
            raise SourceError(f"{path}: no decodable frames")
    finally:
        cap.release()


def replay(
    frames: Iterable[FrameItem],
    control: Model,
    candidate: Model,
    manifest_control: Manifest,
    manifest_candidate: Manifest,
    *,
    comparator: Comparator | None = None,
    max_examples: int = 100,
    clock: Callable[[], float] = time.perf_counter,
    warmup: int = 1,
    repeats: int = 1,
    control_outputs: Sequence[str] | None = None,
    candidate_outputs: Sequence[str] | None = None,
) -> ReplayReport:
    """Compare the two models frame by frame.

    Args:
        frames: uint8 BGR frames, or ``(name, frame)`` pairs such as ``iter_frames`` yields.
        control, candidate: input tensor → outputs.
        comparator: defaults to ``comparator_for(manifest_control)``.
        max_examples: how many disagreements to keep in the report (all are counted).
        clock: seconds, monotonic; times each model call.
        warmup: untimed runs of each model on the first frame (first-run allocations).
        repeats: run each model this many times per frame and keep the fastest time (what
            the model costs rather than what a busy machine's neighbours did); the
            outputs are those of the first run.
        control_outputs, candidate_outputs: the models' output names in order (default: a
            ``NamedModel``'s); with them the task's output is picked by name.

    Raises:
        PreprocessError, OutputDecodeError: a model and its manifest do not fit.
        ValueError: the two manifests have different tasks.
    """
    if manifest_control.task != manifest_candidate.task:
        raise ValueError(
            f"cannot compare a {manifest_control.task} model with a {manifest_candidate.task} model"
        )
    judge = comparator or comparator_for(manifest_control)
    names_control, names_candidate = _names(control, control_outputs), _names(candidate, candidate_outputs)
    pre_control = make_preprocessor(manifest_control)
    pre_candidate = make_preprocessor(manifest_candidate)
    stats = AgreementStats()
    counts: Counter[str] = Counter()
    examples: list[ReplayDisagreement] = []
    control_ms: list[float] = []
    candidate_ms: list[float] = []

    def timed(model: Model, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        t0 = clock()
        out = list(model(x))
        best = clock() - t0
        for _ in range(repeats - 1):
            t0 = clock()
            model(x)
            best = min(best, clock() - t0)
        return out, best * 1000.0

    def run_candidate(x: np.ndarray) -> tuple[list[np.ndarray] | None, float]:
        try:
            return timed(candidate, x)
        except Exception:  # a failing candidate is a figure (error_rate), not a crash
            return None, 0.0

    n = 0
    for index, item in enumerate(frames):
        name, frame = item if isinstance(item, tuple) else (str(index), item)
        x_ctl, x_cand = pre_control(frame), pre_candidate(frame)
        if index == 0:
            for _ in range(warmup):
                control(x_ctl)
                run_candidate(x_cand)
        if index % 2 == 0:
            (out_ctl, ms_ctl), (out_cand, ms_cand) = timed(control, x_ctl), run_candidate(x_cand)
        else:
            (out_cand, ms_cand), (out_ctl, ms_ctl) = run_candidate(x_cand), timed(control, x_ctl)
        n += 1
        control_ms.append(ms_ctl)
        ctl = decode(out_ctl, manifest_control, names_control)
        if ctl.label is not None:
            counts[ctl.label] += 1
        if out_cand is None:
            stats.add_error()
            continue
        candidate_ms.append(ms_cand)
        cand = decode(out_cand, manifest_candidate, names_candidate)
        cmp = judge.compare(ctl, cand)
        stats.add(cmp, latency_ms=ms_cand, candidate_finite=cand.finite)
        if not cmp.agree and len(examples) < max_examples:
            examples.append(ReplayDisagreement(index, name, cmp))
    return ReplayReport(frames=n, stats=stats, per_class_counts=dict(sorted(counts.items())),
                        disagreements=examples, control_ms=control_ms, candidate_ms=candidate_ms)


def format_report(report: ReplayReport, *, control: str = "control", candidate: str = "candidate") -> str:
    """Plain-text summary: agreement, per-class counts and the confusion matrix."""
    lines = [f"frames: {report.frames}"]
    agreement = report.agreement
    lines.append(
        "agreement: n/a" if agreement is None
        else f"agreement: {agreement:.2%} ({report.stats.disagreements} disagreements)"
    )
    fig = report.figures()
    if fig["p99_ms"] is not None and fig["control_p99_ms"] is not None:
        ratio = fig["latency_p99_ratio"]
        lines.append(f"latency p99: {control} {fig['control_p99_ms']:.3g} ms, {candidate} {fig['p99_ms']:.3g} ms"
                     + (f" (ratio {ratio:.3g})" if ratio is not None else ""))
    if report.stats.nan_outputs or report.stats.errors:
        lines.append(f"{candidate}: {report.stats.nan_outputs} NaN/Inf outputs, {report.stats.errors} failures")
    matrix = report.confusion
    if matrix:
        rows = sorted(matrix)
        cols = sorted({k for row in matrix.values() for k in row})
        width = max(6, *(len(x) for x in rows + cols)) + 1
        lines.append(f"confusion (rows: {control}, columns: {candidate}):")
        lines.append(" " * width + "".join(c.rjust(width) for c in cols))
        for r in rows:
            lines.append(r.ljust(width) + "".join(str(matrix[r].get(c, 0)).rjust(width) for c in cols))
    if report.stats.per_class_disagreements:
        lines.append("disagreements per control class:")
        for label, n in sorted(report.stats.per_class_disagreements.items()):
            total = report.per_class_counts.get(label, 0)
            lines.append(f"  {label}: {n}/{total}")
    return "\n".join(lines)
