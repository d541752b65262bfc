"""The replay gate language and its verdicts on a replay timed by a stand-in clock (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.cloud.replay_gate import all_passed, judge_replay, parse_replay_gates
from edgefleet.cloud.rollout.errors import GateSyntaxError, UnknownMetric
from edgefleet.protocols import Manifest
from edgefleet.shadow import replay

MANIFEST = Manifest.model_validate({
    "name": "m", "version": "1", "input": {"name": "x", "shape": [1, 1, 4, 4]}, "labels": ["a", "b"],
    "preprocessing": {"color": "gray", "resize": [4, 4]},
})


class Clock:
    """Seconds; a model advances it by its cost, so the replay's timings are exact."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def model(self, ms: float, out: list[float]):  # type: ignore[no-untyped-def]
        def run(x: np.ndarray) -> list[np.ndarray]:
            self.t += ms / 1000.0
            return [np.asarray([out], np.float32)]
        return run


def frames(n: int) -> list[np.ndarray]:
    return [np.full((8, 8, 3), 200, np.uint8) for _ in range(n)]


def test_parses_the_rollout_gates_replay_measures_and_absolute_p99() -> None:
    gates = parse_replay_gates(["agreement>=0.97,nan_rate<=0", "latency_p99_ratio<=1.2;min=50;floor=1ms",
                                "p99_ms<=12", "error_rate<=0.01"])
    assert [str(g) for g in gates] == ["agreement>=0.97", "nan_rate<=0", "latency_p99_ratio<=1.2;min=50;floor=1ms",
                                       "p99_ms<=12", "error_rate<=0.01"]
    assert str(parse_replay_gates("p99_ms < 7.5ms")[0]) == "p99_ms<7.5"


@pytest.mark.parametrize(("text", "says"), [
    ("failure<=0.02", "known metrics: agreement, nan_rate, error_rate, latency_p99_ratio, p99_ms"),
    ("drift<=0.3", "unknown gate metric 'drift'"),
    ("p99_ms>=12", "did you mean 'p99_ms<=12'"),
    ("p99_ms<=-1", "positive number of milliseconds"),
    ("p99_ms<=fast", "not a number"),
    ("p99_ms<=12;min=5", "takes no options"),
    ("agreement<=0.97", "did you mean 'agreement>=0.97'"),
    ("p99_ms<=12,p99_ms<=10", "more than one gate on 'p99_ms'"),
])
def test_bad_gates_are_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(GateSyntaxError) as exc:
        parse_replay_gates(text)
    assert says in str(exc.value)
    if text.startswith(("failure", "drift")):
        assert isinstance(exc.value, UnknownMetric)


def test_same_cost_passes_and_three_times_the_cost_breaches() -> None:
    gates = parse_replay_gates(["latency_p99_ratio<=1.5", "p99_ms<=5", "agreement>=0.97"])
    clock = Clock()
    same = replay(frames(120), clock.model(3, [0.9, 0.1]), clock.model(3, [0.8, 0.2]), MANIFEST, MANIFEST, clock=clock)
    assert same.figures()["latency_p99_ratio"] == pytest.approx(1.0)
    results = judge_replay(same, gates)
    assert [r.status for r in results] == ["passed", "passed", "passed"], [r.reason for r in results]

    clock = Clock()
    slow = replay(frames(120), clock.model(3, [0.9, 0.1]), clock.model(9, [0.8, 0.2]), MANIFEST, MANIFEST, clock=clock)
    assert slow.figures()["p99_ms"] == pytest.approx(9.0) and slow.figures()["control_p99_ms"] == pytest.approx(3.0)
    ratio, p99, agreement = judge_replay(slow, gates)
    assert ratio.status == "failed" and ratio.value == pytest.approx(3.0) and ratio.significant
    assert p99.status == "failed" and p99.value == pytest.approx(9.0) and "9 > limit 5" in p99.reason
    assert agreement.passed and not all_passed([ratio, p99, agreement])


def test_nan_outputs_and_failures_are_counted_and_gated() -> None:
    clock = Clock()
    calls = iter(range(10_000))

    def flaky(x: np.ndarray) -> list[np.ndarray]:
        i = next(calls)
        if i % 10 == 1:
            raise RuntimeError("out of memory")
        return [np.asarray([[np.nan, 0.5]] if i % 10 == 2 else [[0.9, 0.1]], np.float32)]

    report = replay(frames(100), clock.model(1, [0.9, 0.1]), flaky, MANIFEST, MANIFEST, clock=clock, warmup=0)
    assert report.frames == 100 and report.errors == 10 and report.nan_outputs == 10
    fig = report.figures()
    assert fig["error_rate"] == pytest.approx(0.1) and fig["nan_rate"] == pytest.approx(10 / 90)
    nan, err, agree = judge_replay(report, parse_replay_gates("nan_rate<=0,error_rate<=0;min=50,agreement>=0.5"))
    assert nan.status == "failed" and "10 of 90 frames" in nan.reason
    assert err.status == "failed" and agree.passed


def test_too_few_frames_is_pending_and_does_not_pass() -> None:
    clock = Clock()
    report = replay(frames(10), clock.model(1, [0.9, 0.1]), clock.model(1, [0.9, 0.1]), MANIFEST, MANIFEST, clock=clock)
    (nan,) = judge_replay(report, parse_replay_gates("nan_rate<=0.01"))
    assert nan.status == "pending" and "insufficient sample: 10 of 100 frames" in nan.reason
    assert not all_passed([nan])
