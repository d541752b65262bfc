"""The shadow path and the clip encoder lower themselves; the control thread stays as it was.

Read back from the kernel for each thread id: ``os.sched_getscheduler``, ``os.getpriority``,
``os.sched_getaffinity`` and ``/proc/self/task/<tid>/stat``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from edgefleet.edge_agent.capture import Capture
from edgefleet.edge_agent.config import PipelineSection
from edgefleet.edge_agent.isolation import ThreadPolicy, parse_cpus, plan_cpus
from edgefleet.edge_agent.outbox import Outbox
from edgefleet.edge_agent.pipeline import Pipeline
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import CapturePolicy
from tests.conftest import wait_until

from .conftest import make_runner, task_stat

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")


def _running_pipeline(digit_models: Any, tmp_path: Path, policy: ThreadPolicy) -> tuple[Pipeline, Outbox]:
    control, candidate = digit_models
    outbox = Outbox(tmp_path / "outbox", max_bytes=64 * 1024**2, min_free_bytes=0)
    capture = Capture("dev-iso", outbox, None, work_dir=tmp_path / "work",
                      policy=CapturePolicy(sample_rate=1.0, pre_seconds=0.2, post_seconds=0.2))
    pipe = Pipeline(SyntheticDigits(seed=2), fps=60.0, capture=capture, isolation=policy)
    pipe.control = make_runner(control, tmp_path / "c")
    pipe.shadow = make_runner(candidate, tmp_path / "s", background=True)
    pipe.start()
    wait_until(lambda: pipe.totals.get("shadow_frames", 0) >= 3 and "capture-encoder" in policy.applied,
               30, message="shadow frames compared and the encoder started")
    return pipe, outbox


@linux_only
def test_shadow_and_encoder_threads_run_sched_idle_at_nice_19_and_control_keeps_normal_priority(
    digit_models: Any, tmp_path: Path
) -> None:
    policy = ThreadPolicy.from_settings(shadow_cpus="off")
    pipe, outbox = _running_pipeline(digit_models, tmp_path, policy)
    try:
        for name in ("shadow-path", "capture-encoder"):
            applied = policy.applied[name]
            assert applied.sched_idle and applied.nice == 19, applied
            tid = applied.tid
            assert os.sched_getscheduler(tid) == os.SCHED_IDLE
            assert os.getpriority(os.PRIO_PROCESS, tid) == 19
            stat = task_stat(tid)
            assert stat["policy"] == os.SCHED_IDLE and stat["nice"] == 19, stat
        control_tid = policy.applied["control-path"].tid
        assert control_tid not in {policy.applied["shadow-path"].tid, policy.applied["capture-encoder"].tid}
        assert os.sched_getscheduler(control_tid) == os.SCHED_OTHER
        assert task_stat(control_tid)["nice"] == os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    finally:
        pipe.stop()
        outbox.close()


@linux_only
def test_with_sched_idle_off_the_background_threads_still_get_the_configured_nice(
    digit_models: Any, tmp_path: Path
) -> None:
    policy = ThreadPolicy.from_settings(shadow_cpus="off", sched_idle=False, nice=15)
    pipe, outbox = _running_pipeline(digit_models, tmp_path, policy)
    try:
        tid = policy.applied["shadow-path"].tid
        assert os.sched_getscheduler(tid) == os.SCHED_OTHER
        assert task_stat(tid)["nice"] == 15 == os.getpriority(os.PRIO_PROCESS, tid)
    finally:
        pipe.stop()
        outbox.close()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 allowed CPUs to move threads apart")
def test_background_threads_are_pinned_away_from_the_control_cpu(digit_models: Any, tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    control_cpu, background = allowed[0], allowed[1:]
    policy = ThreadPolicy.from_settings(shadow_cpus=",".join(map(str, background)), control_cpus=str(control_cpu))
    assert policy.cpus == frozenset(background)
    pipe, outbox = _running_pipeline(digit_models, tmp_path, policy)
    try:
        for name in ("shadow-path", "capture-encoder"):
            tid = policy.applied[name].tid
            assert os.sched_getaffinity(tid) == set(background), name
            assert policy.applied[name].cpus == frozenset(background)
        control_tid = policy.applied["control-path"].tid
        assert os.sched_getaffinity(control_tid) == {control_cpu}
        assert os.sched_getaffinity(0) == set(allowed)  # the main thread (and the process) untouched
    finally:
        pipe.stop()
        outbox.close()


@pytest.mark.parametrize(
    ("spec", "allowed", "expected"),
    [
        ("auto", {0, 1}, None),  # a 2-core device: SCHED_IDLE alone
        ("auto", {0, 1, 2}, {1, 2}),
        ("auto", {2, 3, 4, 5}, {3, 4, 5}),
        ("off", {0, 1, 2, 3}, None),
        ("", {0, 1, 2, 3}, None),
        ("2-3", {0, 1, 2, 3}, {2, 3}),
        ("1,3", {0, 1, 2}, {1}),  # cut down to what is allowed
        ("7", {0, 1}, None),  # nothing allowed: left alone (and said so)
        ("0-3", {0, 1, 2, 3}, None),  # every CPU: no isolation to gain
    ],
)
def test_cpu_plan(spec: str, allowed: set[int], expected: set[int] | None) -> None:
    cpus, why = plan_cpus(parse_cpus(spec), frozenset(allowed))
    assert cpus == (frozenset(expected) if expected is not None else None)
    assert why


@pytest.mark.parametrize("bad", ["a", "1-", "3-1", "-2", "1,,2", "0-99999"])
def test_a_bad_cpu_list_is_refused_in_the_config_with_the_part_named(bad: str) -> None:
    with pytest.raises(ValueError, match="CPU"):
        PipelineSection(shadow_cpus=bad)
    assert PipelineSection(shadow_cpus="2-3, 5").shadow_cpus == "2-3, 5"
    assert PipelineSection().shadow_cpus == "auto" and PipelineSection().shadow_sched_idle
