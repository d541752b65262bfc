"""The inference loop: frames → control model → application, and the shadow model beside it.

The control model runs on the critical path and its prediction goes to the application
callbacks at once. The shadow model runs on its own thread behind a bounded queue: when
the queue is full the frame is dropped for the shadow path and counted, so the control
path never waits for the candidate. Frames are shed *before* they queue: the queue holds
one frame by default (``[capture] shadow_queue``) and a new frame pushes the oldest out
(counted as ``shadow.dropped`` in telemetry), so the candidate always sees the freshest
frame and the control thread never blocks. The shadow thread and the clip encoder lower
themselves at start (``isolation.ThreadPolicy``: ``SCHED_IDLE`` or nice 19, CPU affinity
away from the control thread's core where there are cores to spare), so a busy device
takes their CPU time, not the control path's. Models are swapped by assigning a new runner; the
loop picks it up on the next frame (load first, then switch — no frame is lost).

Per telemetry period the loop keeps mergeable statistics (``PeriodStats``) that the
daemon takes with ``take_period()``; the shadow part comes from the ``Capture``'s
``ShadowMonitor`` (one source of truth for agreement, triggers and clips).

Capture (``capture.py``): the control path pushes each frame into the capture ring and
hands ``(frame, control prediction)`` to the shadow queue even without a candidate, so
low-confidence triggers on the control model work with no shadow model deployed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..protocols import LatencyStats, ModelRef
from ..shadow.prediction import Prediction
from ..shadow.stats import AgreementStats, ConfidenceHistogram, LatencyRecorder
from .capture import Capture
from .isolation import SheddingQueue, ThreadPolicy
from .runner import ModelRunner
from .sources import FrameSource, paced

log = logging.getLogger(__name__)

OutputCallback = Callable[[float, np.ndarray, Prediction, ModelRef], None]
ShadowCallback = Callable[[float, np.ndarray, Prediction, Prediction, object, ModelRunner, ModelRunner], None]


@dataclass
class PeriodStats:
    started: float = field(default_factory=time.time)
    frames: int = 0
    errors: int = 0
    nan_outputs: int = 0
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    class_counts: Counter[str] = field(default_factory=Counter)
    confidence: ConfidenceHistogram = field(default_factory=ConfidenceHistogram)
    shadow: AgreementStats = field(default_factory=AgreementStats)
    control: ModelRef | None = None
    candidate: ModelRef | None = None

    def latency_stats(self) -> LatencyStats:
        return self.latency.to_latency_stats()


class Pipeline:
    def __init__(self, source: FrameSource, fps: float, *, shadow_queue: int = 1, capture: Capture | None = None,
                 isolation: ThreadPolicy | None = None):
        self.source = source
        self.fps = fps
        self.control: ModelRunner | None = None
        self.shadow: ModelRunner | None = None
        self.capture = capture or Capture("", None)
        self.isolation = isolation or ThreadPolicy()
        self.capture.thread_policy = self.isolation  # the clip encoder lowers itself the same way
        self.app_output: Callable[[float, np.ndarray, Prediction, ModelRef, float], None] | None = None
        self.on_output: list[OutputCallback] = []
        self.on_shadow: list[ShadowCallback] = []
        self._lock = threading.Lock()
        self._period = PeriodStats()
        self._totals = Counter[str]()
        self._shadow_q: SheddingQueue[tuple[float, np.ndarray, Prediction, ModelRunner, ModelRunner | None]] = (
            SheddingQueue(shadow_queue)
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----- lifecycle -----

    def start(self) -> None:
        self._stop.clear()
        self._shadow_q.reopen()
        self.capture.start()
        self._threads = [
            threading.Thread(target=self._control_loop, name="control-path", daemon=True),
            threading.Thread(target=self._shadow_loop, name="shadow-path", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._shadow_q.close()
        for t in self._threads:
            t.join(timeout=5)
        self.capture.stop()
        self.source.close()

    @property
    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._totals)

    def take_period(self) -> PeriodStats:
        """Statistics since the last call; a new period starts now."""
        with self._lock:
            period, self._period = self._period, PeriodStats()
        period.shadow = self.capture.take_stats()
        period.control = self.control.ref if self.control else None
        period.candidate = self.shadow.ref if self.shadow else None
        return period

    # ----- control path -----

    def _control_loop(self) -> None:
        self.isolation.apply_control("control-path")
        for ts, frame in paced(iter(self.source.frames()), self.fps):
            if self._stop.is_set():
                return
            runner = self.control
            if runner is None:
                time.sleep(0.05)
                continue
            try:
                result = runner.predict(frame)
            except Exception as exc:
                with self._lock:
                    self._period.errors += 1
                    self._totals["errors"] += 1
                log.warning("control inference failed on %s: %s", runner.ref.label, exc)
                continue
            pred = result.prediction
            if self.app_output is not None:
                try:
                    self.app_output(ts, frame, pred, runner.ref, result.latency_ms)
                except Exception:
                    log.exception("application output failed")
            for callback in self.on_output:
                try:
                    callback(ts, frame, pred, runner.ref)
                except Exception:
                    log.exception("application callback failed")
            with self._lock:
                p = self._period
                p.frames += 1
                self._totals["frames"] += 1
                p.latency.add(result.latency_ms)
                if not pred.finite:
                    p.nan_outputs += 1
                    self._totals["nan_outputs"] += 1
                if pred.label is not None:
                    p.class_counts[pred.label] += 1
                if pred.score is not None and math.isfinite(pred.score):
                    p.confidence.add(pred.score)
            self.capture.push(ts, frame)
            shadow = self.shadow
            if shadow is not None or self.capture.recording:
                shed = self._shadow_q.put((ts, frame, pred, runner, shadow))
                if shed is not None:  # the oldest waiting frame makes room (never this one)
                    if shed[4] is not None:
                        self.capture.drop()
                    with self._lock:
                        self._totals["shadow_dropped" if shed[4] is not None else "capture_dropped"] += 1

    # ----- shadow path -----

    def _shadow_loop(self) -> None:
        self.isolation.apply("shadow-path")
        while not self._stop.is_set():
            item = self._shadow_q.get()
            if item is None:  # closed
                return
            ts, frame, control_pred, control, runner = item
            candidate_pred: Prediction | None = None
            latency: float | None = None
            if runner is not None:
                try:
                    result = runner.predict(frame)
                    candidate_pred, latency = result.prediction, result.latency_ms
                except Exception as exc:
                    log.warning("shadow inference failed on %s: %s", runner.ref.label, exc)
                    self._count_shadow_error(control, runner)
                    continue
            try:
                obs = self.capture.observe(ts, frame, control, control_pred, runner, candidate_pred,
                                           candidate_latency_ms=latency)
            except Exception as exc:  # a model whose outputs do not fit its manifest
                log.warning("shadow comparison failed: %s", exc)
                if runner is not None:
                    self._count_shadow_error(control, runner)
                else:
                    with self._lock:
                        self._totals["shadow_errors"] += 1
                continue
            comparison = obs.comparison
            with self._lock:
                if comparison is not None:
                    self._totals["shadow_frames"] += 1
                    if not comparison.agree:
                        self._totals["disagreements"] += 1
                if obs.capture is not None:
                    self._totals["captures"] += 1
            if comparison is None or runner is None or candidate_pred is None:
                continue
            for callback in self.on_shadow:
                try:
                    callback(ts, frame, control_pred, candidate_pred, comparison, control, runner)
                except Exception:
                    log.exception("shadow callback failed")

    def _count_shadow_error(self, control: ModelRunner, candidate: ModelRunner) -> None:
        with self._lock:
            self._totals["shadow_errors"] += 1
        try:
            self.capture.candidate_failed(control, candidate)
        except Exception:  # a candidate whose manifest cannot even build a monitor
            log.exception("shadow error could not be counted")
