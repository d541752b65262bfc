"""Which frames are worth a clip: control prediction + comparison → triggers.

``TriggerPolicy.evaluate`` is pure: it looks at the control model's prediction, the
comparison with the candidate (``None`` when no candidate ran on this frame) and a
random source for sampling, and returns every trigger that fires, highest priority
first. The budget (``budget.py``) then decides whether the top one may capture.

Kinds and priorities (higher wins):

===============  ========  ====================================================
kind             priority  fires when
===============  ========  ====================================================
disagreement     40        the comparison says the models disagree
low_confidence   30        control's top score < ``threshold``
near_threshold   20        ``threshold <= score < threshold + near_band``
sample           10        ``rng.random() < sample_rate``
===============  ========  ====================================================

``threshold`` is the control manifest's ``low_confidence_threshold``. A prediction
without a score (regression, detection with no box) never fires the confidence kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..protocols import CapturePolicy, Manifest
from .compare import Comparison
from .prediction import Prediction

DISAGREEMENT = "disagreement"
LOW_CONFIDENCE = "low_confidence"
NEAR_THRESHOLD = "near_threshold"
SAMPLE = "sample"

PRIORITY: dict[str, int] = {DISAGREEMENT: 40, LOW_CONFIDENCE: 30, NEAR_THRESHOLD: 20, SAMPLE: 10}


class RandomSource(Protocol):
    """``random.Random`` or ``numpy.random.Generator``: anything with ``random() -> float``."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class Trigger:
    kind: str
    priority: int
    label: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class TriggerPolicy:
    disagreement: bool = True
    low_confidence: bool = True
    threshold: float = 0.5
    near_band: float = 0.0
    sample_rate: float = 0.0

    @classmethod
    def from_capture_policy(
        cls, policy: CapturePolicy, manifest: Manifest, *, near_band: float = 0.05
    ) -> TriggerPolicy:
        """Policy from the device settings and the *control* model's manifest.

        ``near_band`` is the device's own value, used when the policy leaves it unset;
        0 disables the kind.
        """
        return cls(
            disagreement=policy.disagreement,
            low_confidence=policy.low_confidence,
            threshold=manifest.low_confidence_threshold,
            near_band=near_band if policy.near_band is None else policy.near_band,
            sample_rate=policy.sample_rate,
        )

    def evaluate(
        self, prediction: Prediction, comparison: Comparison | None, rng: RandomSource
    ) -> list[Trigger]:
        """Every trigger that fires on this frame, highest priority first."""
        out: list[Trigger] = []
        label, score = prediction.label, prediction.score
        if self.disagreement and comparison is not None and not comparison.agree:
            out.append(Trigger(DISAGREEMENT, PRIORITY[DISAGREEMENT], comparison.label or label, score))
        if score is not None:
            if self.low_confidence and score < self.threshold:
                out.append(Trigger(LOW_CONFIDENCE, PRIORITY[LOW_CONFIDENCE], label, score))
            elif self.near_band > 0 and self.threshold <= score < self.threshold + self.near_band:
                out.append(Trigger(NEAR_THRESHOLD, PRIORITY[NEAR_THRESHOLD], label, score))
        if self.sample_rate > 0 and rng.random() < self.sample_rate:
            out.append(Trigger(SAMPLE, PRIORITY[SAMPLE], label, score))
        return out
