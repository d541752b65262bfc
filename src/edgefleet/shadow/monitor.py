"""One object per (control, candidate) pair on a device: decode → compare → trigger → budget → stats.

The agent's pipeline calls ``observe`` once per frame that has a control result
(with the candidate's outputs when the shadow model ran on it, ``None`` when it did
not) and gets back what to do: ``Observation.capture`` is the trigger admitted for a
clip, or ``None``. It never touches the network, a clock or a file; ``now`` is the
frame's timestamp on the same clock as the ``ClipRecorder``.

    monitor = ShadowMonitor(control_manifest, candidate_manifest, settings.capture)
    obs = monitor.observe(ts, control_outputs, candidate_outputs, frame=frame, candidate_latency_ms=dt)
    if obs.capture:
        recorder.request(ts, clip_id)        # then build_event(...) when the clip is ready
    ...
    telemetry.shadow = monitor.take_stats().to_shadow_stats(candidate_ref)

Raw outputs are decoded by name where the monitor knows the models' output names
(``control_outputs``/``candidate_outputs``, in model order): the manifest's ``output``, never
its ``embedding`` output, is read as the scores of a model with several outputs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..protocols import CapturePolicy, Manifest
from .budget import CaptureBudget, frame_signature
from .compare import Comparator, Comparison, comparator_for
from .prediction import Prediction, decode
from .stats import AgreementStats
from .triggers import Trigger, TriggerPolicy


@dataclass(frozen=True)
class Observation:
    control: Prediction
    candidate: Prediction | None
    comparison: Comparison | None
    triggers: list[Trigger] = field(default_factory=list)
    capture: Trigger | None = None
    refused: str | None = None


class ShadowMonitor:
    def __init__(
        self,
        control: Manifest,
        candidate: Manifest | None,
        policy: CapturePolicy,
        *,
        comparator: Comparator | None = None,
        near_band: float = 0.05,
        cooldown_s: float = 10.0,
        dedupe_threshold: float = 0.02,
        seed: int | None = None,
        control_outputs: Sequence[str] | None = None,
        candidate_outputs: Sequence[str] | None = None,
    ):
        if candidate is not None and candidate.task != control.task:
            raise ValueError(f"candidate task {candidate.task!r} differs from control {control.task!r}")
        self.control_manifest = control
        self.candidate_manifest = candidate
        self.control_outputs = list(control_outputs) if control_outputs is not None else None
        self.candidate_outputs = list(candidate_outputs) if candidate_outputs is not None else None
        self.comparator = comparator or comparator_for(control)
        self.near_band = near_band  # the device's own values, where the policy leaves them unset
        self.cooldown_s = cooldown_s
        self.dedupe_threshold = dedupe_threshold
        self.triggers = TriggerPolicy.from_capture_policy(policy, control, near_band=near_band)
        self.budget = CaptureBudget.from_capture_policy(
            policy, cooldown_s=cooldown_s, dedupe_threshold=dedupe_threshold
        )
        self.stats = AgreementStats()
        self.rng = random.Random(seed)

    def update_policy(self, policy: CapturePolicy) -> None:
        """New capture settings; the budget keeps what it has already counted."""
        self.triggers = TriggerPolicy.from_capture_policy(policy, self.control_manifest, near_band=self.near_band)
        self.budget.apply_policy(policy, cooldown_s=self.cooldown_s, dedupe_threshold=self.dedupe_threshold)

    def decode_control(self, outputs: Sequence[np.ndarray]) -> Prediction:
        return decode(outputs, self.control_manifest, self.control_outputs)

    def observe(
        self,
        now: float,
        control: Prediction | Sequence[np.ndarray],
        candidate: Prediction | Sequence[np.ndarray] | None = None,
        *,
        frame: np.ndarray | None = None,
        candidate_latency_ms: float | None = None,
    ) -> Observation:
        """Judge one frame. ``frame`` (when given) feeds near-duplicate suppression.

        Raises:
            OutputDecodeError: raw outputs that do not fit their manifest.
        """
        ctl = control if isinstance(control, Prediction) else self.decode_control(control)
        cand: Prediction | None = None
        comparison: Comparison | None = None
        if candidate is not None and self.candidate_manifest is not None:
            cand = (candidate if isinstance(candidate, Prediction)
                    else decode(candidate, self.candidate_manifest, self.candidate_outputs))
            comparison = self.comparator.compare(ctl, cand)
            self.stats.add(comparison, latency_ms=candidate_latency_ms, candidate_finite=cand.finite)
        fired = self.triggers.evaluate(ctl, comparison, self.rng)
        if not fired:
            return Observation(ctl, cand, comparison, fired)
        top = fired[0]
        signature = frame_signature(frame) if frame is not None else None
        verdict = self.budget.admit(now, top.label, signature)
        if verdict:
            return Observation(ctl, cand, comparison, fired, capture=top)
        return Observation(ctl, cand, comparison, fired, refused=verdict.reason)

    def drop(self, n: int = 1) -> None:
        """Count shadow frames dropped under load."""
        self.stats.add_dropped(n)

    def take_stats(self) -> AgreementStats:
        """This period's statistics; starts a new period."""
        out, self.stats = self.stats, AgreementStats()
        return out
