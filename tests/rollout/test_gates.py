"""Gate parsing and evaluation: pending is never passed, wrong directions are typos."""

from __future__ import annotations

import pytest

from edgefleet.cloud.rollout import (
    KNOWN_METRICS,
    Gate,
    GateSyntaxError,
    UnknownMetric,
    evaluate_gates,
    parse_gate,
    parse_gates,
)


@pytest.mark.parametrize("text,gate", [
    ("failure<=0.02", Gate("failure", "<=", 0.02)),
    (" failure <= 0.02 ", Gate("failure", "<=", 0.02)),
    ("latency_p99_ratio<=1.2", Gate("latency_p99_ratio", "<=", 1.2)),
    ("agreement>=0.97", Gate("agreement", ">=", 0.97)),
    ("agreement>0.9", Gate("agreement", ">", 0.9)),
    ("nan_rate<=0", Gate("nan_rate", "<=", 0.0)),
    ("error_rate<0.01", Gate("error_rate", "<", 0.01)),
    ("drift<=0.3", Gate("drift", "<=", 0.3)),
    ("failure<=2e-2", Gate("failure", "<=", 0.02)),
])
def test_gate_parses(text, gate):
    assert parse_gate(text) == gate
    assert parse_gate(str(gate)) == gate


@pytest.mark.parametrize("text,message", [
    ("failure", "a gate reads METRIC OP LIMIT"),
    ("failure<=", "a gate reads METRIC OP LIMIT"),
    ("failure==0", "operator '==' is not allowed"),
    ("failure<=abc", "limit 'abc' is not a number"),
    ("failure<=nan", "finite"),
    ("failure<=1.5", "share between 0 and 1"),
    ("latency_p99_ratio<=0", "positive ratio"),
    ("failure>=0.02", "did you mean 'failure<=0.02'"),
    ("agreement<=0.97", "did you mean 'agreement>=0.97'"),
])
def test_bad_gate_is_refused(text, message):
    with pytest.raises(GateSyntaxError) as info:
        parse_gate(text)
    assert message in str(info.value)


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(UnknownMetric) as info:
        parse_gate("latency<=1.2")
    assert info.value.metric == "latency"
    for m in KNOWN_METRICS:
        assert m in str(info.value)


def test_gates_from_list_and_commas_and_duplicates():
    assert parse_gates(["failure<=0.02,nan_rate<=0", "agreement>=0.9"]) == (
        Gate("failure", "<=", 0.02), Gate("nan_rate", "<=", 0.0), Gate("agreement", ">=", 0.9))
    with pytest.raises(GateSyntaxError, match="more than one gate"):
        parse_gates("failure<=0.02,failure<=0.1")


class Figures:
    def __init__(self, **values):
        self.values = values

    def value(self, metric):
        return self.values.get(metric)

    def describe(self, metric):
        return f"detail of {metric}"


@pytest.mark.parametrize("gate,value,status", [
    ("failure<=0.02", 0.0, "passed"),
    ("failure<=0.02", 0.02, "passed"),
    ("failure<0.02", 0.02, "failed"),
    ("failure<=0.02", 0.021, "failed"),
    ("failure<=0.02", None, "pending"),
    ("agreement>=0.97", 0.97, "passed"),
    ("agreement>=0.97", 0.96, "failed"),
    ("agreement>0.97", 0.97, "failed"),
    ("nan_rate<=0", 0.0, "passed"),
    ("nan_rate<=0", 1e-9, "failed"),
    ("latency_p99_ratio<=1.2", 3.0, "failed"),
])
def test_gate_evaluation(gate, value, status):
    g = parse_gate(gate)
    [result] = evaluate_gates([g], Figures(**{g.metric: value}))
    assert result.status == status
    assert result.passed is (status == "passed")
    assert result.value == value and result.limit == g.limit and result.op == g.op
    assert "detail of" in result.reason


def test_failed_gate_reason_shows_figure_against_limit():
    [r] = evaluate_gates([parse_gate("latency_p99_ratio<=1.2")],
                         Figures(latency_p99_ratio=3.0))
    assert r.reason.startswith("latency_p99_ratio 3 > limit 1.2")
    assert r.gate == "latency_p99_ratio<=1.2"
