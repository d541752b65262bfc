"""A gate before the fleet: judge an offline replay (``shadow.replay``) with the rollout gate
language, and write what CI systems read (JSON, JUnit XML).

Text flows in through ``parse_replay_gates`` — the rollout gates replay can measure
(``agreement``, ``nan_rate``, ``error_rate``, ``latency_p99_ratio``, with their options,
parsed by ``rollout.gates.parse_gate``) plus an absolute ``p99_ms<=12`` (the candidate's
p99 inference time in ms on this machine). ``judge_replay`` hands them, with a
``ReplaySource`` over the report, to ``rollout.gates.evaluate_gates``, so a replay is judged
exactly as a wave is:

* ``nan_rate`` / ``error_rate``: Wilson bounds on k of n frames (``<=0``: any one fails),
  with the gate's minimum sample (default 100 frames);
* ``latency_p99_ratio``: the two models ran interleaved on the same frames; the frames are
  cut into periods of ``PERIOD_FRAMES`` and each period's p99 of both models feeds the same
  bootstrap interval and 2 ms floor the rollout uses (one "device": this machine);
* ``agreement`` and ``p99_ms``: the figure against the limit.

A gate that cannot be judged (pending: too few frames, no data) does not pass: CI fails
on it as on a breach, saying so. ``to_junit`` writes one testcase per gate (a ``failure``
carries the figure and the threshold); ``to_json`` the verdicts, figures and the report.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from typing import Any

from ..shadow.replay import ReplayReport, percentile
from .rollout.errors import GateSyntaxError, UnknownMetric
from .rollout.gates import (
    Evidence,
    Gate,
    GateResult,
    LatencyEvidence,
    RateEvidence,
    evaluate_gates,
    parse_gate,
)
from .rollout.stats import DeviceLatency

#: What a replay measures, in the order the help lists them.
REPLAY_METRICS: dict[str, str] = {
    "agreement": "share of frames where candidate and control agree (the control's comparator)",
    "nan_rate": "candidate outputs with NaN/Inf / compared frames",
    "error_rate": "frames the candidate failed on / frames it was given",
    "latency_p99_ratio": "candidate p99 / control p99, both run interleaved on the same frames",
    "p99_ms": "the candidate's p99 inference time in milliseconds (absolute, on this machine)",
}
PERIOD_FRAMES = 20
_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)")
_P99 = re.compile(r"^\s*p99_ms\s*(<=|<|>=|>|==|=|!=)\s*([^\s<>=!;]+?)\s*(?:ms)?\s*$")


def _parse_p99(text: str) -> Gate:
    if ";" in text:
        raise GateSyntaxError("p99_ms takes no options", text=text)
    m = _P99.match(text)
    if m is None:
        raise GateSyntaxError("an absolute latency gate reads 'p99_ms<=12' (milliseconds)", text=text)
    op, raw = m.groups()
    if op not in ("<=", "<"):
        raise GateSyntaxError(f"p99_ms is better when lower; '{text.strip()}' would pass only when it is bad "
                              f"(did you mean 'p99_ms<={raw}'?)" if op in (">=", ">")
                              else f"operator {op!r} is not allowed; use <= or <", text=text)
    try:
        limit = float(raw)
    except ValueError:
        raise GateSyntaxError(f"limit {raw!r} is not a number of milliseconds", text=text) from None
    if not math.isfinite(limit) or limit <= 0:
        raise GateSyntaxError(f"p99_ms is a positive number of milliseconds; got {raw}", text=text)
    return Gate("p99_ms", op, limit)  # type: ignore[arg-type]


def parse_replay_gate(text: str) -> Gate:
    """One replay gate: a rollout gate replay can measure, or ``p99_ms<=N``.

    Raises:
        UnknownMetric: a metric replay does not measure (the message lists those it does).
        GateSyntaxError: anything else that is wrong, said plainly.
    """
    m = _NAME.match(text)
    metric = m.group(1) if m else ""
    if metric == "p99_ms":
        return _parse_p99(text)
    if m is not None and metric not in REPLAY_METRICS:
        raise UnknownMetric(metric, tuple(REPLAY_METRICS), text=text)
    return parse_gate(text)


def parse_replay_gates(texts: str | Iterable[str]) -> tuple[Gate, ...]:
    """Several gates, as a list and/or comma-separated; two gates on one metric are refused."""
    items = [texts] if isinstance(texts, str) else list(texts)
    gates = [parse_replay_gate(part) for item in items for part in item.split(",") if part.strip()]
    seen: set[str] = set()
    for g in gates:
        if g.metric in seen:
            raise GateSyntaxError(f"more than one gate on {g.metric!r}", text=str(g))
        seen.add(g.metric)
    return tuple(gates)


def _periods(values: Sequence[float], size: int) -> tuple[float, ...]:
    chunks = [values[i:i + size] for i in range(0, len(values), size)]
    if len(chunks) > 1 and len(chunks[-1]) < size // 2:  # a short tail joins the one before
        chunks[-2] = list(chunks[-2]) + list(chunks.pop())
    return tuple(p for c in chunks if (p := percentile(c, 0.99)) is not None)


class ReplaySource:
    """A ``MetricSource`` (with evidence) over one replay report."""

    def __init__(self, report: ReplayReport, *, period_frames: int = PERIOD_FRAMES):
        self.report = report
        self.figures = report.figures()
        self.period_frames = period_frames

    def value(self, metric: str) -> float | None:
        return self.figures.get(metric)

    def describe(self, metric: str) -> str:
        f, r = self.figures, self.report
        if metric == "agreement":
            return f"{r.stats.disagreements} disagreements of {r.stats.compared} frames"
        if metric == "p99_ms":
            return f"candidate p99 over {len(r.candidate_ms)} frames"
        if metric == "latency_p99_ratio" and f["p99_ms"] is not None and f["control_p99_ms"] is not None:
            return f"p99 {f['p99_ms']:.3g} ms vs {f['control_p99_ms']:.3g} ms"
        return ""

    def evidence(self, metric: str) -> Evidence | None:
        s = self.report.stats
        if metric == "nan_rate" and s.compared:
            return RateEvidence(k=s.nan_outputs, n=s.compared)
        if metric == "error_rate" and s.compared + s.errors:
            return RateEvidence(k=s.errors, n=s.compared + s.errors)
        if metric == "latency_p99_ratio":
            new = _periods(self.report.candidate_ms, self.period_frames)
            old = _periods(self.report.control_ms, self.period_frames)
            if new and old:
                device = DeviceLatency("replay", new=new, old=old, frames=len(self.report.candidate_ms))
                return LatencyEvidence(profiles={"this machine": (device,)})
        return None


def judge_replay(report: ReplayReport, gates: Iterable[Gate], *,
                 period_frames: int = PERIOD_FRAMES) -> list[GateResult]:
    """One result per gate, in order (``rollout.gates.evaluate_gates`` on the replay)."""
    return evaluate_gates(gates, ReplaySource(report, period_frames=period_frames))


def all_passed(results: Iterable[GateResult]) -> bool:
    """True when every gate passed (pending does not pass)."""
    return all(r.passed for r in results)


def failure_message(r: GateResult) -> str:
    """``agreement 0.62 < 0.97 (threshold agreement>=0.97)``: the figure and the threshold."""
    figure = "no figure" if r.value is None else f"{r.metric} {r.value:.4g}"
    what = "pending, cannot be judged" if r.pending else "breached"
    return f"{r.gate} {what}: {figure}, threshold {r.op} {r.limit:g} — {r.reason}"


def to_json(results: Sequence[GateResult], report: ReplayReport, *, control: str, candidate: str,
            seconds: float) -> dict[str, Any]:
    """The verdict, every gate's result, the figures and the full replay report."""
    return {
        "schema": "fleet.replay-gate/1",
        "control": control, "candidate": candidate, "frames": report.frames,
        "passed": all_passed(results), "seconds": round(seconds, 3),
        "figures": report.figures(),
        "gates": [{**r.model_dump(mode="json"), "gate": r.gate} for r in results],
        "report": report.to_dict(),
    }


def to_junit(results: Sequence[GateResult], report: ReplayReport, *, control: str, candidate: str,
             seconds: float) -> bytes:
    """JUnit XML: ``testsuites/testsuite`` with one ``testcase`` per gate; a gate that did
    not pass carries a ``failure`` (``type`` GateBreach or GatePending) whose message has
    the figure and the threshold."""
    failures = sum(1 for r in results if not r.passed)
    suite_name = f"replay {candidate} vs {control}"
    root = ET.Element("testsuites", name="fleet shadow replay", tests=str(len(results)),
                      failures=str(failures), errors="0", time=f"{seconds:.3f}")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(results)),
                          failures=str(failures), errors="0", skipped="0", time=f"{seconds:.3f}")
    props = ET.SubElement(suite, "properties")
    figures = report.figures()
    for key, value in [("control", control), ("candidate", candidate), ("frames", report.frames),
                       *sorted(figures.items())]:
        ET.SubElement(props, "property", name=str(key), value="" if value is None else
                      (f"{value:.6g}" if isinstance(value, float) else str(value)))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="fleet.shadow.replay", name=r.gate, time="0")
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=failure_message(r),
                                    type="GatePending" if r.pending else "GateBreach")
            failure.text = r.reason
        else:
            ET.SubElement(case, "system-out").text = r.reason
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


__all__ = ["PERIOD_FRAMES", "REPLAY_METRICS", "ReplaySource", "all_passed", "failure_message", "judge_replay",
           "parse_replay_gate", "parse_replay_gates", "to_json", "to_junit"]
