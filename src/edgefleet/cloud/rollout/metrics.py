"""Per-device status and per-wave figures: what the gates read.

``classify`` turns one ``DeviceObservation`` into a ``DeviceStatus`` relative to the
rollout's model and the clock; ``wave_metrics`` folds a wave's (observation, status) pairs
into ``WaveMetrics``, whose ``value(metric)`` answers the gates (None = no data yet).

Freshness: a device counts ``healthy`` or ``active`` only on fresh signed state, i.e. its
verified report confirms the director version and generation signed for it. While it
lags (``lagging_since``) it is in flight like any device that has not confirmed yet; once
the lag lasted longer than ``stale_after_s`` (``stale_since``) it is ``stale`` (pending:
the wave waits) and, once stale for longer than the device timeout, ``timed_out``.

Device timeout, as the issue asks: an offline device is *pending*, not failed, until the
timeout. After it, a device that had been sent the model and went silent (or sat in one
phase) counts as ``timed_out`` — a failure, since a model that bricks a device looks
exactly like that — while one that was offline throughout and never got the model is
``skipped``: no evidence either way, left out of the failure ratio, and sent the model when
it comes back if the rollout still goes on.

Maintenance windows: a device that downloaded the model and waits for its window
(``awaiting_window``) is pending, never failed, online or not; its timeout clock starts
when its window opens (``window_opens_at``, from its signed report).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from edgefleet.protocols.messages import ModelRef, Phase

from .gates import Evidence, LatencyEvidence, RateEvidence
from .model import DeviceObservation
from .stats import DeviceLatency, point_ratio


class DeviceStatus(str, Enum):
    WAITING = "waiting"  # its wave has not started
    PENDING = "pending"  # its wave started; offline, not sent the model yet
    QUEUED = "queued"  # online, waiting for a max_concurrent slot
    DISPATCHED = "dispatched"  # sent the model, no acknowledgement yet
    INSTALLING = "installing"  # notified .. preparing
    SILENT = "silent"  # sent the model, offline since; pending until the timeout
    ACTIVE = "active"  # running the model, agent's health window open
    HEALTHY = "healthy"  # running the model, agent says healthy
    STALE = "stale"  # says it runs the model, but its signed state lags: never counted healthy
    FAILED = "failed"  # install / self-test failed
    ROLLED_BACK = "rolled_back"  # the agent rolled back on its own
    TIMED_OUT = "timed_out"  # sent the model, then silent or stuck past the timeout
    SKIPPED = "skipped"  # offline past the timeout, never sent the model
    WINDOW = "awaiting_window"  # downloaded, switches in its maintenance window: pending, never failed


SETTLED = frozenset({DeviceStatus.ACTIVE, DeviceStatus.HEALTHY, DeviceStatus.FAILED,
                     DeviceStatus.ROLLED_BACK, DeviceStatus.TIMED_OUT, DeviceStatus.SKIPPED})
BAD = frozenset({DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK, DeviceStatus.TIMED_OUT})
RUNNING = frozenset({DeviceStatus.ACTIVE, DeviceStatus.HEALTHY})
ATTEMPTED = RUNNING | BAD
IN_FLIGHT = frozenset({DeviceStatus.DISPATCHED, DeviceStatus.INSTALLING})
_INSTALLING_PHASES = frozenset({Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING,
                                Phase.PREPARING})


def same_ref(a: ModelRef | None, b: ModelRef | None) -> bool:
    """Two refs name the same bundle (by digest); None only equals None."""
    if a is None or b is None:
        return a is b
    return a.digest == b.digest


def classify(obs: DeviceObservation, *, model: ModelRef, device_timeout_s: float,
             wave_started_at: float | None, now: float) -> DeviceStatus:
    """Status of one member device. ``wave_started_at``: when its wave began (None: not yet)."""
    if wave_started_at is None:
        return DeviceStatus.WAITING
    if obs.dispatched_at is None:
        if obs.online:
            return DeviceStatus.QUEUED
        since = max(obs.assigned_at or 0.0, wave_started_at)
        return DeviceStatus.SKIPPED if now - since > device_timeout_s else DeviceStatus.PENDING
    running = same_ref(obs.installed, model)
    if running or same_ref(obs.reported_target, model):
        if obs.phase == Phase.FAILED:
            return DeviceStatus.FAILED
        if obs.phase == Phase.ROLLED_BACK:
            return DeviceStatus.ROLLED_BACK
        if running and (obs.phase in (Phase.HEALTHY, Phase.IDLE) or (obs.phase == Phase.ACTIVE and obs.online)):
            if obs.stale_since is not None:  # fresh signed state required: pending, then timed out
                since = max(obs.stale_since, obs.dispatched_at)
                return DeviceStatus.TIMED_OUT if now - since > device_timeout_s else DeviceStatus.STALE
            if obs.lagging_since is None:
                return DeviceStatus.HEALTHY if obs.phase != Phase.ACTIVE else DeviceStatus.ACTIVE
            # its report predates what was signed for it: in flight until it confirms
    if obs.timed_out_at is not None:
        return DeviceStatus.TIMED_OUT
    if obs.phase == Phase.WAITING_FOR_WINDOW and same_ref(obs.reported_target, model) \
            and obs.window_opens_at is not None:
        if now < obs.window_opens_at:  # its window has not opened: waiting, online or not
            return DeviceStatus.WINDOW
        since = max(obs.dispatched_at, obs.window_opens_at)  # the timeout clock starts when it opens
        if now - since > device_timeout_s:
            return DeviceStatus.TIMED_OUT
        return DeviceStatus.WINDOW if obs.online else DeviceStatus.SILENT
    since = obs.dispatched_at
    if obs.online:
        since = max(since, obs.phase_since or 0.0)
    else:
        since = max(since, obs.last_seen or 0.0)
    if now - since > device_timeout_s:
        return DeviceStatus.TIMED_OUT
    if not obs.online:
        return DeviceStatus.SILENT
    if same_ref(obs.reported_target, model) and obs.phase in _INSTALLING_PHASES:
        return DeviceStatus.INSTALLING
    return DeviceStatus.DISPATCHED


@dataclass(frozen=True)
class WaveMetrics:
    """The figures of one wave. ``value(metric)`` is what a gate compares; None = no data."""

    wave: int
    members: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    attempted: int = 0
    bad: int = 0
    skipped: int = 0
    pending: int = 0
    failure: float | None = None
    latency_p99_ratio: float | None = None
    latency_by_hardware: dict[str, float] = field(default_factory=dict)
    worst_hardware: str | None = None
    frames: int = 0
    nan_rate: float | None = None
    error_rate: float | None = None
    agreement: float | None = None
    agreement_frames: int = 0
    agreement_devices: int = 0
    drift: float | None = None
    drift_devices: int = 0
    nans: int = 0
    error_count: int = 0
    latency_devices: dict[str, tuple[DeviceLatency, ...]] = field(default_factory=dict)

    def evidence(self, metric: str) -> Evidence | None:
        """What a statistically sound gate judges (``gates.evaluate_gates``); None: no data."""
        if metric == "failure":
            return RateEvidence(self.bad, self.attempted, cap=self.members - self.skipped) \
                if self.attempted else None
        if metric == "nan_rate":
            return RateEvidence(self.nans, self.frames) if self.frames else None
        if metric == "error_rate":
            n = self.frames + self.error_count
            return RateEvidence(self.error_count, n) if n else None
        if metric == "latency_p99_ratio":
            return LatencyEvidence(self.latency_devices) if self.latency_devices else None
        return None

    @property
    def failure_floor(self) -> float | None:
        """A lower bound on the wave's final failure ratio, known before every device has
        settled: bad devices over every member that can still be attempted."""
        base = self.members - self.skipped
        return self.bad / base if base > 0 else None

    def value(self, metric: str) -> float | None:
        return {
            "failure": self.failure, "latency_p99_ratio": self.latency_p99_ratio,
            "nan_rate": self.nan_rate, "error_rate": self.error_rate,
            "agreement": self.agreement, "drift": self.drift,
        }.get(metric)

    def describe(self, metric: str) -> str:
        c = self.counts
        if metric == "failure":
            return (f"{self.bad} of {self.attempted} attempted: {c.get('failed', 0)} failed, "
                    f"{c.get('rolled_back', 0)} rolled back, {c.get('timed_out', 0)} timed out; "
                    f"{self.pending} pending")
        if metric == "latency_p99_ratio":
            if not self.latency_by_hardware:
                return "no latency from both models on the same devices yet"
            return f"worst profile {self.worst_hardware}"
        if metric in ("nan_rate", "error_rate"):
            return f"over {self.frames} frames"
        if metric == "agreement":
            return f"{self.agreement_frames} shadow frames on {self.agreement_devices} devices"
        if metric == "drift":
            return f"mean over {self.drift_devices} devices"
        return ""


def wave_metrics(wave: int,
                 members: Iterable[tuple[DeviceObservation, DeviceStatus]]) -> WaveMetrics:
    """Fold one wave's members into its figures.

    failure = (failed + rolled back + timed out) / attempted, attempted = settled devices
    that were sent the model. latency_p99_ratio = per hardware profile, sum of the model's
    p99 / sum of the previous model's p99 over devices with both (each device's mean over its
    telemetry periods where known, ``latency_devices`` keeps them for the gate's bootstrap);
    the worst profile counts.
    nan_rate = NaN outputs / frames; error_rate = errors / (frames + errors): ``frames``
    counts the frames the model produced an output for, so a model that fails on every
    frame still has an error rate (1.0). agreement = frame-weighted mean (plain mean
    when no frame counts are known). drift = mean.
    """
    counts: Counter[str] = Counter()
    n = 0
    lat: dict[str, list[DeviceLatency]] = defaultdict(list)
    frames = nans = errors = 0
    agree_w = agree_sum = 0.0
    agree_plain: list[float] = []
    agree_frames = 0
    drifts: list[float] = []
    for obs, status in members:
        n += 1
        counts[status.value] += 1
        new = tuple(v for v in obs.candidate_p99_periods if v > 0)
        old = tuple(v for v in obs.baseline_p99_periods if v > 0)
        if not (new and old) and obs.candidate_p99_ms is not None and obs.baseline_p99_ms \
                and obs.baseline_p99_ms > 0:
            new, old = (obs.candidate_p99_ms,), (obs.baseline_p99_ms,)
        if new and old:
            lat[obs.hardware_id].append(DeviceLatency(obs.device_id, new, old, max(obs.frames, 0)))
        frames += max(obs.frames, 0)
        nans += max(obs.nan_outputs, 0)
        errors += max(obs.errors, 0)
        if obs.agreement is not None:
            agree_plain.append(obs.agreement)
            if obs.agreement_frames > 0:
                agree_w += obs.agreement_frames
                agree_sum += obs.agreement * obs.agreement_frames
                agree_frames += obs.agreement_frames
        if obs.drift is not None:
            drifts.append(obs.drift)
    attempted = sum(counts[s.value] for s in ATTEMPTED)
    bad = sum(counts[s.value] for s in BAD)
    settled = sum(counts[s.value] for s in SETTLED)
    by_hw = {hw: point_ratio(devs) for hw, devs in lat.items()}
    worst = max(by_hw, key=lambda hw: (by_hw[hw], hw)) if by_hw else None
    if agree_w > 0:
        agreement: float | None = agree_sum / agree_w
    elif agree_plain:
        agreement = sum(agree_plain) / len(agree_plain)
    else:
        agreement = None
    return WaveMetrics(
        wave=wave, members=n, counts=dict(counts), attempted=attempted, bad=bad,
        skipped=counts[DeviceStatus.SKIPPED.value], pending=n - settled,
        failure=bad / attempted if attempted else None,
        latency_p99_ratio=by_hw[worst] if worst is not None else None,
        latency_by_hardware=by_hw, worst_hardware=worst,
        frames=frames,
        nan_rate=nans / frames if frames else None,
        error_rate=errors / (frames + errors) if frames + errors else None,
        agreement=agreement, agreement_frames=agree_frames,
        agreement_devices=len(agree_plain),
        drift=sum(drifts) / len(drifts) if drifts else None, drift_devices=len(drifts),
        nans=nans, error_count=errors, latency_devices={hw: tuple(d) for hw, d in lat.items()},
    )
