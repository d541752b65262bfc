"""Health gates: ``failure<=0.02``, ``latency_p99_ratio<=1.2``, ``agreement>=0.97``.

Text flows in through ``parse_gate``/``parse_gates`` and becomes immutable ``Gate`` values;
after a wave's soak the planner hands them, with the wave's figures, to ``evaluate_gates``,
which returns one ``GateResult`` per gate: passed, failed, or *pending* when the figure it
needs does not exist yet (no device attempted, no telemetry) or rests on too small a
sample. Pending never counts as passed.

Each metric has a good direction; a gate pointing the other way (``failure>=0.02``) would
pass exactly when things are bad, so it is refused as a typo.

Statistically sound gates (issue 13): a source that offers ``evidence(metric)`` (the
wave's ``WaveMetrics`` does) is judged on the evidence, not the bare figure:

* a minimum sample per gate — frames for ``latency_p99_ratio``/``nan_rate``/``error_rate``,
  devices for ``failure`` (capped at what the wave can attempt) — below which the gate is
  *pending (insufficient sample: n of m)*; options after the gate set it:
  ``latency_p99_ratio<=1.2;min=500;floor=2ms;confidence=0.95``;
* rates: ``<=0`` keeps meaning "any fails" (a NaN is never noise); a limit above 0 is
  breached only when the one-sided Wilson lower bound is above it (*significant*);
* ``latency_p99_ratio``: per hardware profile, not judged (passes, saying why) when the two
  models' p99 differ by less than the floor (default 2 ms); else a bootstrap interval of
  the ratio over the devices' telemetry periods, breached only when its lower bound is
  above the limit *and* the lower bound of the difference is at least the floor.

Sources without ``evidence`` (plain figures) are compared directly, as before.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, Union

from pydantic import BaseModel, ConfigDict

from .errors import GateSyntaxError, UnknownMetric
from .stats import DeviceLatency, LatencyInterval, point_ratio, ratio_interval, wilson_interval


@dataclass(frozen=True)
class MetricInfo:
    name: str
    description: str
    lower_is_better: bool
    unit_interval: bool  # the figure is a share in [0, 1]


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("failure", "(failed + rolled back + timed out) / attempted devices", True, True),
        MetricInfo("latency_p99_ratio",
                   "p99 latency of the new model / the same devices' previous model "
                   "(worst hardware profile)", True, False),
        MetricInfo("nan_rate", "NaN outputs / frames of the new model", True, True),
        MetricInfo("error_rate", "inference errors / frames the new model was given", True, True),
        MetricInfo("agreement",
                   "candidate/control agreement measured while the candidate ran in shadow",
                   False, True),
        MetricInfo("drift", "mean drift score of the wave's devices", True, True),
    )
}
KNOWN_METRICS: tuple[str, ...] = tuple(METRICS)

#: Default minimum sample per gate (frames, or devices for ``failure``).
DEFAULT_MIN_SAMPLE: dict[str, int] = {
    "failure": 3, "latency_p99_ratio": 100, "nan_rate": 100, "error_rate": 100,
}
SAMPLE_UNIT: dict[str, str] = {
    "failure": "devices", "latency_p99_ratio": "frames", "nan_rate": "frames", "error_rate": "frames",
}
DEFAULT_CONFIDENCE = 0.95
#: Latency periods are heavy-tailed (a period's p99 is about its worst frame or two), where a
#: percentile bootstrap over few periods is optimistic: its default level is higher.
DEFAULT_CONFIDENCE_BY_METRIC: dict[str, float] = {"latency_p99_ratio": 0.99}
DEFAULT_FLOOR_MS = 2.0
#: Per profile and model, the fewest telemetry periods a latency interval is drawn from:
#: below it (a device's running figure alone is one value) the gate is pending.
MIN_PERIODS = 3
_OPTIONS: dict[str, tuple[str, ...]] = {
    "failure": ("min", "confidence"), "nan_rate": ("min", "confidence"),
    "error_rate": ("min", "confidence"), "latency_p99_ratio": ("min", "floor", "confidence"),
}

Op = Literal["<=", "<", ">=", ">"]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}
_NEGATED = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|=|!=)\s*([^\s<>=!]+)\s*$")
_OPTION = re.compile(r"^\s*([a-z_]+)\s*=\s*([^\s=]+)\s*$")


@dataclass(frozen=True)
class Gate:
    """One health gate: the wave passes when ``value <op> limit``.

    ``min_sample``, ``floor_ms`` and ``confidence`` are the gate's own options (None: the
    defaults ``DEFAULT_MIN_SAMPLE``, ``DEFAULT_FLOOR_MS``, ``DEFAULT_CONFIDENCE`` — 0.99 for
    ``latency_p99_ratio``)."""

    metric: str
    op: Op
    limit: float
    min_sample: int | None = None
    floor_ms: float | None = None
    confidence: float | None = None

    def check(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)

    @property
    def needed(self) -> int:
        return self.min_sample if self.min_sample is not None else DEFAULT_MIN_SAMPLE.get(self.metric, 1)

    @property
    def floor(self) -> float:
        return self.floor_ms if self.floor_ms is not None else DEFAULT_FLOOR_MS

    @property
    def level(self) -> float:
        if self.confidence is not None:
            return self.confidence
        return DEFAULT_CONFIDENCE_BY_METRIC.get(self.metric, DEFAULT_CONFIDENCE)

    def __str__(self) -> str:
        text = f"{self.metric}{self.op}{self.limit:g}"
        if self.min_sample is not None:
            text += f";min={self.min_sample}"
        if self.floor_ms is not None:
            text += f";floor={self.floor_ms:g}ms"
        if self.confidence is not None:
            text += f";confidence={self.confidence:g}"
        return text


GateStatus = Literal["passed", "failed", "pending"]


class GateResult(BaseModel):
    """One gate's verdict on one wave, with the figure it saw and the evidence behind it:
    the interval (``interval_low``..``interval_high`` at ``confidence``), the sample it
    rests on against the minimum, and whether a breach is *significant* (None where no
    statistics applied; ``judged`` False where the latency floor kept the ratio unjudged)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    op: Op
    limit: float
    value: float | None
    status: GateStatus
    reason: str
    interval_low: float | None = None
    interval_high: float | None = None
    confidence: float | None = None
    sample: int | None = None
    min_sample: int | None = None
    sample_unit: str | None = None
    significant: bool | None = None
    judged: bool | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def gate(self) -> str:
        return f"{self.metric}{self.op}{self.limit:g}"


@dataclass(frozen=True)
class RateEvidence:
    """``k`` bad of ``n`` (frames or devices); ``cap``: the most ``n`` can become (a wave's
    attemptable devices), which caps the minimum sample."""

    k: int
    n: int
    cap: int | None = None


@dataclass(frozen=True)
class LatencyEvidence:
    """Per hardware profile, the devices with p99 periods of both models."""

    profiles: Mapping[str, tuple[DeviceLatency, ...]]


Evidence = Union[RateEvidence, LatencyEvidence]


class MetricSource(Protocol):
    """What gates read figures from (``WaveMetrics`` is one). A source may also offer
    ``evidence(metric) -> Evidence | None``; then the gate is judged on it."""

    def value(self, metric: str) -> float | None: ...
    def describe(self, metric: str) -> str: ...


def _parse_options(metric: str, parts: list[str], text: str) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    allowed = _OPTIONS.get(metric, ())
    for part in parts:
        m = _OPTION.match(part)
        if m is None:
            raise GateSyntaxError(f"option {part.strip()!r} reads NAME=VALUE, for example 'min=500'",
                                  text=text)
        name, raw = m.groups()
        if name not in allowed:
            raise GateSyntaxError(
                f"{metric} takes no option {name!r}" + (f" (it takes {', '.join(allowed)})" if allowed else ""),
                text=text)
        if name in out:
            raise GateSyntaxError(f"option {name!r} given twice", text=text)
        if name == "min":
            if not raw.isdigit() or int(raw) < 1:
                raise GateSyntaxError(f"min is a whole number of {SAMPLE_UNIT[metric]} >= 1; got {raw!r}",
                                      text=text)
            out[name] = int(raw)
            continue
        number = raw[:-2] if name == "floor" and raw.endswith("ms") else raw
        if name == "floor" and not raw.endswith("ms"):
            raise GateSyntaxError(f"floor needs a unit: '{raw}ms'", text=text)
        try:
            value = float(number)
        except ValueError:
            raise GateSyntaxError(f"{name} {raw!r} is not a number", text=text) from None
        if name == "floor" and not (math.isfinite(value) and value >= 0):
            raise GateSyntaxError("floor must be a finite number of ms >= 0", text=text)
        if name == "confidence" and not (0.5 <= value < 1.0):
            raise GateSyntaxError(f"confidence is between 0.5 and 1 (e.g. 0.95); got {raw}", text=text)
        out[name] = value
    return out


def parse_gate(text: str) -> Gate:
    """Parse one gate such as ``latency_p99_ratio<=1.2`` or
    ``latency_p99_ratio<=1.2;min=500;floor=2ms;confidence=0.95``.

    Raises:
        UnknownMetric: the metric is not one of ``KNOWN_METRICS`` (the message lists them).
        GateSyntaxError: anything else that is wrong, said plainly.
    """
    parts = text.split(";") if isinstance(text, str) else [text]
    m = _GATE.match(parts[0]) if isinstance(parts[0], str) else None
    if m is None:
        raise GateSyntaxError(
            "a gate reads METRIC OP LIMIT, for example 'failure<=0.02' "
            "(OP is one of <=, <, >=, >)", text=str(text))
    metric, op, raw = m.groups()
    if metric not in METRICS:
        raise UnknownMetric(metric, KNOWN_METRICS, text=text)
    if op not in _OPS:
        raise GateSyntaxError(f"operator {op!r} is not allowed; use <=, <, >= or >", text=text)
    try:
        limit = float(raw)
    except ValueError:
        raise GateSyntaxError(f"limit {raw!r} is not a number", text=text) from None
    if not math.isfinite(limit):
        raise GateSyntaxError("the limit must be a finite number", text=text)
    info = METRICS[metric]
    if info.unit_interval and not 0.0 <= limit <= 1.0:
        raise GateSyntaxError(f"{metric} is a share between 0 and 1; got {limit:g}", text=text)
    if not info.unit_interval and limit <= 0:
        raise GateSyntaxError(f"{metric} is a positive ratio; got {limit:g}", text=text)
    upper = op in ("<=", "<")
    if upper != info.lower_is_better:
        good = "<=" if info.lower_is_better else ">="
        raise GateSyntaxError(
            f"{metric} is better when {'lower' if info.lower_is_better else 'higher'}; "
            f"'{metric}{op}{raw}' would pass only when it is bad (did you mean "
            f"'{metric}{good}{raw}'?)", text=text)
    opts = _parse_options(metric, parts[1:], text)
    return Gate(metric, op, limit, min_sample=opts.get("min"),  # type: ignore[arg-type]
                floor_ms=opts.get("floor"), confidence=opts.get("confidence"))


def parse_gates(texts: str | Iterable[str]) -> tuple[Gate, ...]:
    """Parse several gates, given as a list and/or comma-separated. Duplicates are refused."""
    items = [texts] if isinstance(texts, str) else list(texts)
    gates: list[Gate] = []
    for item in items:
        for part in item.split(","):
            if part.strip():
                gates.append(parse_gate(part))
    seen: set[str] = set()
    for g in gates:
        if g.metric in seen:
            raise GateSyntaxError(f"more than one gate on {g.metric!r}", text=str(g))
        seen.add(g.metric)
    return tuple(gates)


def evaluate_gates(gates: Iterable[Gate], source: MetricSource) -> list[GateResult]:
    """One result per gate, in order; a gate whose figure is missing, or whose sample is
    below its minimum, is ``pending``."""
    evidence_of = getattr(source, "evidence", None)
    results = []
    for g in gates:
        value = source.value(g.metric)
        detail = source.describe(g.metric)
        detail = f" ({detail})" if detail else ""
        ev = evidence_of(g.metric) if callable(evidence_of) else None
        if isinstance(ev, RateEvidence) and ev.n > 0:
            results.append(judge_rate(g, ev, detail))
        elif isinstance(ev, LatencyEvidence) and ev.profiles:
            results.append(judge_latency(g, ev, detail))
        elif value is None:
            results.append(_result(g, None, "pending", f"{g.metric}: no data yet{detail}"))
        elif g.check(value):
            results.append(_result(g, value, "passed", f"{g.metric} {value:.4g} {g.op} {g.limit:g}{detail}"))
        else:
            results.append(_result(g, value, "failed",
                                   f"{g.metric} {value:.4g} {_NEGATED[g.op]} limit {g.limit:g}{detail}"))
    return results


def _result(g: Gate, value: float | None, status: GateStatus, reason: str, **evidence: object) -> GateResult:
    return GateResult(metric=g.metric, op=g.op, limit=g.limit, value=value, status=status,
                      reason=reason, **evidence)  # type: ignore[arg-type]


def rate_breached(g: Gate, k: int, n: int) -> bool:
    """Whether ``k`` bad of ``n`` breaches ``g`` significantly: any bad one for a zero
    limit, else the one-sided Wilson lower bound against the limit."""
    if n <= 0:
        return False
    if g.limit == 0 and g.op == "<=":
        return k > 0
    low, _ = wilson_interval(k, n, g.level)
    return not g.check(low)


def judge_rate(g: Gate, ev: RateEvidence, detail: str = "") -> GateResult:
    """A share gate (``failure``, ``nan_rate``, ``error_rate``) on ``k`` of ``n``."""
    unit = SAMPLE_UNIT.get(g.metric, "samples")
    needed = g.needed if ev.cap is None else max(1, min(g.needed, ev.cap))
    value = ev.k / ev.n
    low, high = wilson_interval(ev.k, ev.n, g.level)
    facts = dict(interval_low=low, interval_high=high, confidence=g.level, sample=ev.n,
                 min_sample=needed, sample_unit=unit)
    interval = f"{g.level:.0%} interval {low:.3g}..{high:.3g}, n={ev.n} {unit}"
    if g.limit == 0 and g.op == "<=" and ev.k > 0:
        return _result(g, value, "failed",
                       f"{g.metric} {value:.4g} > limit 0: {ev.k} of {ev.n} {unit}, any fails "
                       f"(significant){detail}", significant=True, **facts)
    if ev.n < needed:
        return _result(g, value, "pending",
                       f"{g.metric}: pending (insufficient sample: {ev.n} of {needed} {unit}){detail}",
                       **facts)
    if rate_breached(g, ev.k, ev.n):
        return _result(g, value, "failed",
                       f"{g.metric} {value:.4g} {_NEGATED[g.op]} limit {g.limit:g}: significant, "
                       f"lower bound {low:.3g} ({interval}){detail}", significant=True, **facts)
    note = "above the limit but not significant" if not g.check(value) else "within the limit"
    return _result(g, value, "passed", f"{g.metric} {value:.4g}: {note} ({interval}){detail}",
                   significant=False, **facts)


@dataclass(frozen=True)
class _Profile:
    hardware: str
    ratio: float
    new_ms: float
    old_ms: float
    frames: int
    periods: int  # telemetry periods on the scarcer side (new or previous model)
    interval: LatencyInterval | None  # None: not judged (floor) or sample too small

    def breaches(self, g: Gate) -> bool:
        iv = self.interval
        return iv is not None and not g.check(iv.low) and iv.diff_low >= g.floor


def judge_latency(g: Gate, ev: LatencyEvidence, detail: str = "") -> GateResult:
    """``latency_p99_ratio`` per hardware profile: floor, minimum frames, bootstrap interval.

    Failed when any profile with enough frames breaches significantly (its ratio interval's
    lower bound above the limit and its difference interval's lower bound at least the
    floor); else pending while a profile with data lacks the sample; else
    passed. The figure is the worst profile's point ratio."""
    profiles: list[_Profile] = []
    for hw in sorted(ev.profiles):
        devices = tuple(d for d in ev.profiles[hw] if d.new and d.old and d.old_mean > 0)
        if not devices:
            continue
        new_ms = sum(d.new_mean for d in devices) / len(devices)
        old_ms = sum(d.old_mean for d in devices) / len(devices)
        frames = sum(d.frames for d in devices)
        periods = min(sum(len(d.new) for d in devices), sum(len(d.old) for d in devices))
        enough = frames >= g.needed and periods >= MIN_PERIODS
        judge = enough and abs(new_ms - old_ms) >= g.floor
        interval = ratio_interval(devices, g.level) if judge else None
        profiles.append(_Profile(hw, point_ratio(devices), new_ms, old_ms, frames, periods, interval))
    if not profiles:
        return _result(g, None, "pending", f"{g.metric}: no data yet{detail}")
    worst = max(profiles, key=lambda p: (p.ratio, p.hardware))
    breaching = [p for p in profiles if p.breaches(g)]
    short = [p for p in profiles if p.frames < g.needed or p.periods < MIN_PERIODS]
    shown = max(breaching, key=lambda p: (p.interval.low if p.interval else 0.0, p.hardware)) \
        if breaching else (min(short, key=lambda p: (p.frames >= g.needed, p.frames, p.hardware))
                           if short else worst)
    facts: dict[str, object] = dict(confidence=g.level, sample=shown.frames, min_sample=g.needed,
                                    sample_unit="frames")
    if shown.interval is not None:
        facts.update(interval_low=shown.interval.low, interval_high=shown.interval.high)
    where = (f"worst profile {worst.hardware}" if shown is worst else f"profile {shown.hardware}; "
             f"worst profile {worst.hardware}")
    figures = f"p99 {shown.new_ms:.3g} ms vs {shown.old_ms:.3g} ms"
    if breaching:
        assert shown.interval is not None
        iv = shown.interval
        return _result(g, shown.ratio, "failed",
                       f"{g.metric} {shown.ratio:.4g} {_NEGATED[g.op]} limit {g.limit:g}: significant, "
                       f"{g.level:.0%} interval {iv.low:.3g}..{iv.high:.3g}, at least {iv.diff_low:.3g} ms "
                       f"slower, over {shown.frames} frames ({figures}; {where})",
                       significant=True, judged=True, **facts)
    if short:
        lack = (f"{shown.frames} of {g.needed} frames" if shown.frames < g.needed
                else f"{shown.periods} of {MIN_PERIODS} telemetry periods")
        return _result(g, worst.ratio, "pending",
                       f"{g.metric}: pending (insufficient sample: {lack} on {shown.hardware}){detail}",
                       **facts)
    judged = [p for p in profiles if p.interval is not None]
    if not judged:
        return _result(g, worst.ratio, "passed",
                       f"{g.metric} {worst.ratio:.4g}: not judged, the p99s differ by less than the "
                       f"{g.floor:g} ms floor ({figures}; {where})", significant=False, judged=False,
                       **facts)
    top = max(judged, key=lambda p: (p.interval.high if p.interval else 0.0, p.hardware))
    assert top.interval is not None
    lo, hi = top.interval.low, top.interval.high
    facts.update(interval_low=lo, interval_high=hi, sample=top.frames)
    note = "above the limit but not significant" if not g.check(top.ratio) else "within the limit"
    if not g.check(lo):
        note = (f"above the limit, but the slowdown may be under the {g.floor:g} ms floor "
                f"(at least {top.interval.diff_low:.3g} ms): not significant")
    unjudged = len(profiles) - len(judged)
    extra = f"; {unjudged} profile(s) under the {g.floor:g} ms floor" if unjudged else ""
    return _result(g, worst.ratio, "passed",
                   f"{g.metric} {worst.ratio:.4g}: {note} ({g.level:.0%} interval {lo:.3g}..{hi:.3g} "
                   f"on {top.hardware} over {top.frames} frames{extra}; worst profile {worst.hardware})",
                   significant=False, judged=True, **facts)


def evidence_text(g: Mapping[str, object]) -> str:
    """The evidence of one gate result (a ``GateResult`` as JSON) in a few words, for the
    CLI and the rollout page: ``95% 0.98..1.12 · n 340 of min 100 frames · not significant``
    (empty for a result without statistics)."""
    parts = []
    lo, hi, conf = g.get("interval_low"), g.get("interval_high"), g.get("confidence")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        parts.append(f"{conf:.0%} {lo:.3g}..{hi:.3g}" if isinstance(conf, float) else f"{lo:.3g}..{hi:.3g}")
    n, need, unit = g.get("sample"), g.get("min_sample"), g.get("sample_unit") or ""
    if n is not None and need is not None:
        parts.append(f"n {n} of min {need} {unit}".rstrip())
    if g.get("judged") is False:
        parts.append("not judged (under the floor)")
    elif g.get("significant") is True:
        parts.append("significant")
    elif g.get("significant") is False:
        parts.append("not significant")
    elif g.get("status") == "pending" and n is not None and need is not None:
        parts.append("insufficient sample" if isinstance(n, int) and isinstance(need, int) and n < need else "")
    return " · ".join(p for p in parts if p)
