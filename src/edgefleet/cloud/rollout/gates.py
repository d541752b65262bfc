"""Health gates: ``failure<=0.02``, ``latency_p99_ratio<=1.2``, ``agreement>=0.97``.

Text flows in through ``parse_gate``/``parse_gates`` and becomes immutable ``Gate`` values;
after a wave's soak the planner hands them, with the wave's figures, to ``evaluate_gates``,
which returns one ``GateResult`` per gate: passed, failed, or *pending* when the figure it
needs does not exist yet (no device attempted, no telemetry). Pending never counts as passed.

Each metric has a good direction; a gate pointing the other way (``failure>=0.02``) would
pass exactly when things are bad, so it is refused as a typo.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from .errors import GateSyntaxError, UnknownMetric


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

Op = Literal["<=", "<", ">=", ">"]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}
_NEGATED = {"<=": ">", "<": ">=", ">=": "<", ">": "<="}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|==|=|!=)\s*([^\s<>=!]+)\s*$")


@dataclass(frozen=True)
class Gate:
    """One health gate: the wave passes when ``value <op> limit``."""

    metric: str
    op: Op
    limit: float

    def check(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.limit:g}"


GateStatus = Literal["passed", "failed", "pending"]


class GateResult(BaseModel):
    """One gate's verdict on one wave, with the figure it saw."""

    model_config = ConfigDict(frozen=True)

    metric: str
    op: Op
    limit: float
    value: float | None
    status: GateStatus
    reason: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def gate(self) -> str:
        return f"{self.metric}{self.op}{self.limit:g}"


class MetricSource(Protocol):
    """What gates read figures from (``WaveMetrics`` is one)."""

    def value(self, metric: str) -> float | None: ...
    def describe(self, metric: str) -> str: ...


def parse_gate(text: str) -> Gate:
    """Parse one gate such as ``latency_p99_ratio<=1.2``.

    Raises:
        UnknownMetric: the metric is not one of ``KNOWN_METRICS`` (the message lists them).
        GateSyntaxError: anything else that is wrong, said plainly.
    """
    m = _GATE.match(text) if isinstance(text, str) else None
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
    return Gate(metric, op, limit)  # type: ignore[arg-type]


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
    """One result per gate, in order; a gate whose figure is missing is ``pending``."""
    results = []
    for g in gates:
        value = source.value(g.metric)
        detail = source.describe(g.metric)
        detail = f" ({detail})" if detail else ""
        if value is None:
            results.append(GateResult(metric=g.metric, op=g.op, limit=g.limit, value=None,
                                      status="pending", reason=f"{g.metric}: no data yet{detail}"))
        elif g.check(value):
            results.append(GateResult(
                metric=g.metric, op=g.op, limit=g.limit, value=value, status="passed",
                reason=f"{g.metric} {value:.4g} {g.op} {g.limit:g}{detail}"))
        else:
            results.append(GateResult(
                metric=g.metric, op=g.op, limit=g.limit, value=value, status="failed",
                reason=f"{g.metric} {value:.4g} {_NEGATED[g.op]} limit {g.limit:g}{detail}"))
    return results
