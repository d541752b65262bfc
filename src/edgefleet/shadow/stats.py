"""Shadow statistics that add up: per period on a device, and across periods and devices.

``AgreementStats.add(comparison)`` per compared frame; ``merge`` is associative and
commutative (plain sums of counters and histograms), so a device can keep one object
per telemetry period and the controller can fold periods and devices together.
``to_shadow_stats`` gives the wire form (``protocols.ShadowStats``).

``ConfidenceHistogram`` (10 fixed bins over [0, 1]) and ``LatencyRecorder`` (log-spaced
buckets, 1 % relative error, exact mean and max) merge the same way. Percentiles
cannot be merged from wire ``LatencyStats`` exactly; ``merge_shadow_stats`` therefore
averages them weighted by frames and says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..protocols import LatencyStats, ModelRef, ShadowStats
from ..protocols.messages import MAX_OPEN_KEYS
from .compare import NONE_LABEL, Comparison

HIST_BINS = 10


@dataclass
class ConfidenceHistogram:
    """Counts of scores in ``HIST_BINS`` equal bins over [0, 1]; 1.0 falls in the last bin."""

    counts: list[int] = field(default_factory=lambda: [0] * HIST_BINS)

    def add(self, score: float) -> None:
        if not math.isfinite(score):
            return
        i = int(min(max(score, 0.0), 1.0) * HIST_BINS)
        self.counts[min(i, HIST_BINS - 1)] += 1

    def merge(self, other: ConfidenceHistogram) -> ConfidenceHistogram:
        return ConfidenceHistogram([a + b for a, b in zip(self.counts, other.counts)])

    @property
    def total(self) -> int:
        return sum(self.counts)

    def to_list(self) -> list[int]:
        return list(self.counts)


class LatencyRecorder:
    """Latency samples (ms) in log-spaced buckets; mergeable p50/p95/p99."""

    RATIO = 1.02
    FLOOR_MS = 1e-3

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._log_ratio = math.log(self.RATIO)

    def add(self, ms: float) -> None:
        if not math.isfinite(ms) or ms < 0:
            return
        i = 0 if ms <= self.FLOOR_MS else int(math.log(ms / self.FLOOR_MS) / self._log_ratio) + 1
        self.buckets[i] += 1
        self.count += 1
        self.total += ms
        self.max = max(self.max, ms)

    def merge(self, other: LatencyRecorder) -> LatencyRecorder:
        out = LatencyRecorder()
        out.buckets = self.buckets + other.buckets
        out.count = self.count + other.count
        out.total = self.total + other.total
        out.max = max(self.max, other.max)
        return out

    def _value(self, i: int) -> float:
        if i == 0:
            return self.FLOOR_MS
        lo = self.FLOOR_MS * self.RATIO ** (i - 1)
        return min(lo * math.sqrt(self.RATIO), self.max)  # geometric middle of the bucket

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1), nearest rank, within 1 % of the true sample."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return self._value(i)
        return self.max

    def to_latency_stats(self) -> LatencyStats:
        if self.count == 0:
            return LatencyStats()
        return LatencyStats(
            p50=round(self.percentile(0.50), 3),
            p95=round(self.percentile(0.95), 3),
            p99=round(self.percentile(0.99), 3),
            mean=round(self.total / self.count, 3),
            max=round(self.max, 3),
        )


class AgreementStats:
    """Agreement, per-class disagreements, confusion and confidence histograms."""

    def __init__(self) -> None:
        self.compared = 0
        self.disagreements = 0
        self.dropped = 0
        self.nan_outputs = 0
        self.errors = 0
        self.per_class_disagreements: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.confusion: Counter[tuple[str, str]] = Counter()
        self.control_confidence = ConfidenceHistogram()
        self.candidate_confidence = ConfidenceHistogram()
        self.latency = LatencyRecorder()

    def add(self, comparison: Comparison, *, latency_ms: float | None = None, candidate_finite: bool = True) -> None:
        """Count one compared frame; ``latency_ms`` is the candidate's inference time,
        ``candidate_finite`` False when the candidate's output held NaN or infinity."""
        self.compared += 1
        if not candidate_finite:
            self.nan_outputs += 1
        if not comparison.agree:
            self.disagreements += 1
            self.per_class_disagreements[comparison.label or NONE_LABEL] += 1
            self.reasons[comparison.reason] += 1
        self.confusion.update(comparison.pairs)
        if comparison.control_score is not None:
            self.control_confidence.add(comparison.control_score)
        if comparison.candidate_score is not None:
            self.candidate_confidence.add(comparison.candidate_score)
        if latency_ms is not None:
            self.latency.add(latency_ms)

    def add_dropped(self, n: int = 1) -> None:
        """Frames the shadow queue dropped under load (never compared)."""
        self.dropped += n

    def add_error(self, n: int = 1) -> None:
        """Frames the candidate failed on (never compared)."""
        self.errors += n

    @property
    def agreement(self) -> float | None:
        if self.compared == 0:
            return None
        return 1.0 - self.disagreements / self.compared

    def merge(self, other: AgreementStats) -> AgreementStats:
        """A new object holding both; neither input changes."""
        out = AgreementStats()
        out.compared = self.compared + other.compared
        out.disagreements = self.disagreements + other.disagreements
        out.dropped = self.dropped + other.dropped
        out.nan_outputs = self.nan_outputs + other.nan_outputs
        out.errors = self.errors + other.errors
        out.per_class_disagreements = self.per_class_disagreements + other.per_class_disagreements
        out.reasons = self.reasons + other.reasons
        out.confusion = self.confusion + other.confusion
        out.control_confidence = self.control_confidence.merge(other.control_confidence)
        out.candidate_confidence = self.candidate_confidence.merge(other.candidate_confidence)
        out.latency = self.latency.merge(other.latency)
        return out

    __add__ = merge

    def confusion_matrix(self) -> dict[str, dict[str, int]]:
        """``[control_label][candidate_label] -> count`` (diagonal included)."""
        out: dict[str, dict[str, int]] = {}
        for (c, k), n in sorted(self.confusion.items()):
            out.setdefault(c, {})[k] = n
        return out

    def to_shadow_stats(
        self, candidate: ModelRef | None = None, *, max_confusion_cells: int = 2000
    ) -> ShadowStats:
        """The wire form; keeps the ``max_confusion_cells`` largest confusion cells."""
        cells = self.confusion
        if len(cells) > max_confusion_cells:
            cells = Counter(dict(cells.most_common(max_confusion_cells)))
        confusion: dict[str, dict[str, int]] = {}
        for (c, k), n in sorted(cells.items()):
            confusion.setdefault(c, {})[k] = n
        return ShadowStats(
            candidate=candidate,
            frames=self.compared,
            dropped=self.dropped,
            disagreements=self.disagreements,
            agreement=self.agreement,
            per_class_disagreements=dict(sorted(self.per_class_disagreements.items())),
            latency_ms=self.latency.to_latency_stats(),
            confusion=confusion,
            nan_outputs=self.nan_outputs,
            errors=self.errors,
        )


def merge_shadow_stats(items: Iterable[ShadowStats]) -> ShadowStats:
    """Fold wire ``ShadowStats`` (periods, devices) into one.

    Counts, per-class disagreements and confusion add exactly; agreement is recomputed.
    Latency: mean weighted by frames, max of maxima, percentiles weighted by frames (an
    approximation — exact merged percentiles need ``LatencyRecorder`` on one side).
    ``candidate`` is kept when all inputs name the same one.
    """
    frames = dropped = disagreements = nan_outputs = errors = 0
    per_class: Counter[str] = Counter()
    confusion: Counter[tuple[str, str]] = Counter()
    lat = {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0}
    lat_max = 0.0
    candidates: set[tuple[str, str, str] | None] = set()
    candidate: ModelRef | None = None
    for s in items:
        frames += s.frames
        dropped += s.dropped
        disagreements += s.disagreements
        nan_outputs += s.nan_outputs
        errors += s.errors
        per_class.update(s.per_class_disagreements)
        for c, row in s.confusion.items():
            for k, n in row.items():
                confusion[(c, k)] += n
        for key in lat:
            lat[key] += getattr(s.latency_ms, key) * s.frames
        lat_max = max(lat_max, s.latency_ms.max)
        candidates.add((s.candidate.name, s.candidate.version, s.candidate.digest) if s.candidate else None)
        candidate = s.candidate
    matrix: dict[str, dict[str, int]] = {}
    for (c, k), n in sorted(confusion.items()):
        matrix.setdefault(c, {})[k] = n
    return ShadowStats(
        candidate=candidate if len(candidates) == 1 else None,
        frames=frames,
        dropped=dropped,
        disagreements=disagreements,
        agreement=(1.0 - disagreements / frames) if frames else None,
        per_class_disagreements=dict(sorted(per_class.items())),
        latency_ms=LatencyStats(
            **{k: (v / frames if frames else 0.0) for k, v in lat.items()}, max=lat_max
        ),
        confusion=matrix,
        nan_outputs=nan_outputs,
        errors=errors,
    )


_WIRE_KEYS = frozenset(ShadowStats.model_fields)
_LATENCY_KEYS = ("p50", "p95", "p99", "mean")  # weighted by frames; max: the maximum
_LATENCY_KEYS_ALL = frozenset(LatencyStats.model_fields)
_COUNT_MAX = 2**63 - 1


def merge_into_wire(stored: dict[str, Any], s: ShadowStats) -> dict[str, Any] | None:
    """``merge_shadow_stats([ShadowStats.model_validate(stored), s]).model_dump(mode="json")``
    on plain values, without building either model: the controller folds every telemetry
    period into the stored row of its (device, pair) this way. ``stored`` is such a dump.

    None where the plain sums would not make a valid ``ShadowStats`` (more than
    ``MAX_OPEN_KEYS`` classes, a count past 64 bits, an agreement outside [0, 1], a latency
    that is not finite) or ``stored`` is not a full dump (an older row): the caller then
    takes ``merge_shadow_stats``, which refuses or fills in as it always did.
    """
    if stored.keys() != _WIRE_KEYS:
        return None
    latency = stored["latency_ms"]
    if not isinstance(latency, dict) or latency.keys() != _LATENCY_KEYS_ALL:
        return None
    frames = stored["frames"] + s.frames
    disagreements = stored["disagreements"] + s.disagreements
    per_class: dict[str, int] = dict(stored["per_class_disagreements"])
    for label, n in s.per_class_disagreements.items():
        per_class[label] = per_class.get(label, 0) + n
    cells: dict[tuple[str, str], int] = {}
    for matrix in (stored["confusion"], s.confusion):
        for c, row in matrix.items():
            for k, n in row.items():
                cells[(c, k)] = cells.get((c, k), 0) + n
    confusion: dict[str, dict[str, int]] = {}
    for (c, k), n in sorted(cells.items()):
        confusion.setdefault(c, {})[k] = n
    agreement = (1.0 - disagreements / frames) if frames else None
    if (len(per_class) > MAX_OPEN_KEYS or len(confusion) > MAX_OPEN_KEYS
            or any(len(row) > MAX_OPEN_KEYS for row in confusion.values())
            or any(n > _COUNT_MAX for n in per_class.values()) or any(n > _COUNT_MAX for n in cells.values())
            or (agreement is not None and not 0.0 <= agreement <= 1.0)):
        return None
    stored_frames, wire = stored["frames"], s.latency_ms
    mean_of = {}
    for key in _LATENCY_KEYS:  # the sums in merge_shadow_stats's order: 0.0 + stored, then s
        total = 0.0 + latency[key] * stored_frames
        total += getattr(wire, key) * s.frames
        mean_of[key] = total / frames if frames else 0.0
    mean_of["max"] = max(0.0, latency["max"], wire.max)
    if not all(math.isfinite(v) for v in mean_of.values()):
        return None
    stored_candidate = stored["candidate"]
    candidate = s.candidate.model_dump(mode="json") if s.candidate is not None else None
    return {
        "candidate": candidate if stored_candidate == candidate else None,
        "frames": frames,
        "dropped": stored["dropped"] + s.dropped,
        "disagreements": disagreements,
        "agreement": agreement,
        "per_class_disagreements": dict(sorted(per_class.items())),
        "latency_ms": mean_of,
        "confusion": confusion,
        "nan_outputs": stored["nan_outputs"] + s.nan_outputs,
        "errors": stored["errors"] + s.errors,
    }
