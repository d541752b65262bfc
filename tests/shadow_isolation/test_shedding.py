"""Candidate frames are shed before they queue (one waiting frame, the oldest goes), counted in
telemetry's ``shadow.dropped``; the control path never drops or delays a frame for it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from edgefleet.edge_agent.isolation import SheddingQueue
from edgefleet.edge_agent.pipeline import Pipeline
from tests.conftest import wait_until

from .conftest import FiniteDigits, GatedRunner, make_runner


def test_the_queue_sheds_the_oldest_item_and_never_blocks() -> None:
    q: SheddingQueue[int] = SheddingQueue(1)
    assert q.put(1) is None
    assert q.put(2) == 1 and q.put(3) == 2
    assert len(q) == 1 and q.get() == 3
    q2: SheddingQueue[int] = SheddingQueue(2)
    assert [q2.put(i) for i in range(4)] == [None, None, 0, 1]
    assert q2.get() == 2
    q2.close()
    assert q2.get() is None  # closed: the consumer ends
    with pytest.raises(ValueError):
        SheddingQueue(0)


def test_a_stuck_candidate_sheds_every_waiting_frame_and_the_control_path_delivers_all(
    digit_models: Any, tmp_path: Path
) -> None:
    control, candidate = digit_models
    n = 120
    source = FiniteDigits(n)
    pipe = Pipeline(source, fps=400.0)  # the default: one waiting frame
    delivered: list[float] = []
    pipe.on_output.append(lambda ts, _frame, _pred, _ref: delivered.append(ts))
    compared: list[float] = []
    pipe.on_shadow.append(lambda ts, *_rest: compared.append(ts))
    gate = threading.Event()
    pipe.control = make_runner(control, tmp_path / "c")
    shadow = make_runner(candidate, tmp_path / "s", GatedRunner, background=True)
    shadow.gate = gate  # type: ignore[attr-defined]
    pipe.shadow = shadow
    pipe.start()
    try:
        wait_until(lambda: pipe.totals.get("frames", 0) >= n, 60, message="every control frame")
        assert delivered == source.timestamps  # every frame, in order: none dropped for the shadow path
        totals = pipe.totals
        assert totals["frames"] == n and totals.get("errors", 0) == 0
        # at most one frame inside the stuck candidate and one waiting; every other was shed
        shed = totals["shadow_dropped"]
        assert shed >= n - 2
        gate.set()
        wait_until(lambda: len(compared) + shed >= n, 60, message="the shadow path resumes")
        assert len(compared) + shed == n  # each frame either compared or shed, none lost unseen
        assert compared[-1] == source.timestamps[-1]  # the freshest frame waited, not the oldest
        period = pipe.take_period()
        assert period.frames == n and period.latency.count == n
        assert period.shadow.dropped == shed
        assert period.shadow.to_shadow_stats(shadow.ref).dropped == shed  # the telemetry field
    finally:
        gate.set()
        pipe.stop()


def test_without_a_candidate_the_capture_hand_off_sheds_too_and_counts_apart(digit_models: Any, tmp_path: Path) -> None:
    from edgefleet.edge_agent.capture import Capture
    from edgefleet.edge_agent.outbox import Outbox

    control, _ = digit_models
    outbox = Outbox(tmp_path / "outbox", max_bytes=64 * 1024**2, min_free_bytes=0)
    capture = Capture("dev-iso", outbox, None, work_dir=tmp_path / "work")
    block = threading.Event()
    original = capture.observe

    def slow_observe(*args: Any, **kwargs: Any) -> Any:
        block.wait()
        return original(*args, **kwargs)

    capture.observe = slow_observe  # type: ignore[method-assign]
    source = FiniteDigits(40)
    pipe = Pipeline(source, fps=400.0, capture=capture)
    pipe.control = make_runner(control, tmp_path / "c")
    pipe.start()
    try:
        wait_until(lambda: pipe.totals.get("frames", 0) >= 40, 60, message="every control frame")
        totals = pipe.totals
        assert totals.get("capture_dropped", 0) >= 40 - 2 and totals.get("shadow_dropped", 0) == 0
        assert pipe.take_period().shadow.dropped == 0  # no candidate: nothing counts against one
    finally:
        block.set()
        pipe.stop()
        outbox.close()
