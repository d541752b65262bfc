"""The agent's pipeline with real ONNX Runtime models: overload, capture without a candidate,
the local prediction socket."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefleet.edge_agent.app_output import (
    AppOutput,
    PredictionServer,
    parse_address,
    read_predictions,
)
from edgefleet.edge_agent.capture import Capture
from edgefleet.edge_agent.outbox import Outbox
from edgefleet.edge_agent.pipeline import Pipeline
from edgefleet.edge_agent.runner import Inference, ModelRunner
from edgefleet.edge_agent.sources import SyntheticDigits
from edgefleet.protocols import CapturePolicy, ModelRef
from tests.conftest import wait_until


def _runner(model: Any, tmp: Path, cls: type[ModelRunner] = ModelRunner, **manifest_update: Any) -> ModelRunner:
    m = model.manifest.model_copy(update=manifest_update)
    d = tmp / f"{m.name}-{m.version}"
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(model.path, d / m.model_file)
    digest = hashlib.sha256(model.path.read_bytes()).hexdigest()
    return cls.load(ModelRef(name=m.name, version=m.version, digest=digest), m, d)


class BlockedRunner(ModelRunner):
    """The real candidate, held at a gate: a shadow model that cannot keep up at all."""

    gate = threading.Event()

    def predict(self, frame: Any) -> Inference:
        self.gate.wait()
        return super().predict(frame)


def test_control_path_keeps_going_while_the_shadow_model_is_stuck_and_drops_are_counted(
    digit_models: Any, tmp_path: Path
) -> None:
    control, candidate = digit_models
    pipe = Pipeline(SyntheticDigits(seed=1), fps=200.0, shadow_queue=4)
    pipe.control = _runner(control, tmp_path)
    BlockedRunner.gate.clear()
    pipe.shadow = _runner(candidate, tmp_path, BlockedRunner)
    pipe.start()
    try:
        wait_until(lambda: pipe.totals.get("frames", 0) >= 200, 30, message="200 control frames")
        totals = pipe.totals
        assert totals.get("shadow_frames", 0) == 0
        assert totals["shadow_dropped"] >= totals["frames"] - 4 - 2
        BlockedRunner.gate.set()
        wait_until(lambda: pipe.totals.get("shadow_frames", 0) >= 4, 30, message="shadow resumes")
    finally:
        BlockedRunner.gate.set()
        pipe.stop()
    period = pipe.take_period()
    assert period.shadow.dropped >= 190 and period.shadow.compared >= 4
    assert period.shadow.to_shadow_stats(pipe.shadow.ref if pipe.shadow else None).dropped == period.shadow.dropped


class FaultyCandidate(ModelRunner):
    """The real candidate, made unreliable: every third frame raises (a CUDA error on a
    device), every third gives NaN, the rest are its real predictions."""

    calls = 0

    def predict(self, frame: Any) -> Inference:
        FaultyCandidate.calls += 1
        if FaultyCandidate.calls % 3 == 0:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        result = super().predict(frame)
        if FaultyCandidate.calls % 3 == 1:
            p = result.prediction
            nan = dataclasses.replace(p, probs=np.full_like(p.probs, np.nan), score=float("nan"), finite=False)
            return Inference(nan, result.latency_ms)
        return result


def test_the_candidates_nan_outputs_and_failures_are_counted_for_telemetry(digit_models: Any, tmp_path: Path) -> None:
    control, candidate = digit_models
    pipe = Pipeline(SyntheticDigits(seed=3), fps=100.0)
    pipe.control = _runner(control, tmp_path)
    FaultyCandidate.calls = 0
    pipe.shadow = _runner(candidate, tmp_path, FaultyCandidate)
    pipe.start()
    try:
        wait_until(lambda: pipe.totals.get("shadow_errors", 0) >= 10, 30, message="10 candidate failures")
    finally:
        pipe.stop()
    period = pipe.take_period()
    stats = period.shadow.to_shadow_stats(pipe.shadow.ref)
    attempted = stats.frames + stats.errors
    assert attempted == FaultyCandidate.calls  # every frame given to the candidate is accounted for
    assert stats.errors == FaultyCandidate.calls // 3 == pipe.totals["shadow_errors"]
    assert stats.nan_outputs == (FaultyCandidate.calls + 2) // 3
    assert period.frames >= attempted  # the control path never failed
    assert period.errors == 0 and period.nan_outputs == 0


def test_low_confidence_captures_work_without_a_shadow_model(digit_models: Any, tmp_path: Path) -> None:
    control, _ = digit_models
    outbox = Outbox(tmp_path / "outbox", max_bytes=64 * 1024**2, min_free_bytes=0)
    published: list[Any] = []
    policy = CapturePolicy(low_confidence=True, disagreement=True, pre_seconds=0.3, post_seconds=0.2,
                           max_per_minute=100)
    capture = Capture("cam-lc", outbox, published.append, policy=policy, work_dir=tmp_path / "work",
                      cooldown_s=0.0, dedupe_threshold=0.0, fps_hint=60)
    pipe = Pipeline(SyntheticDigits(seed=2), fps=60.0, capture=capture)
    pipe.control = _runner(control, tmp_path, low_confidence_threshold=1.0)  # every frame is "unsure"
    pipe.start()
    try:
        wait_until(lambda: len(published) >= 2, 30, message="two low-confidence captures")
    finally:
        pipe.stop()
    items = outbox.pending()
    assert {e.event_id for e in published[:2]} <= {i.event.event_id for i in items}
    item = next(i for i in items if i.event.event_id == published[0].event_id)
    assert item.event.trigger == "low_confidence" and item.event.candidate is None
    assert item.event.control.model is not None and item.event.control.model.name == control.manifest.name
    assert item.clip_path is not None and item.clip_size > 0 and item.keyframe_size > 0
    assert pipe.take_period().shadow.compared == 0  # nothing to compare with
    outbox.close()


@pytest.fixture
def short_dir() -> Any:
    d = Path(tempfile.mkdtemp(prefix="ef-", dir="/tmp"))  # UNIX socket paths must be short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_applications_read_predictions_from_the_local_socket_and_a_stalled_reader_blocks_nothing(
    digit_models: Any, tmp_path: Path, short_dir: Path
) -> None:
    control, _ = digit_models
    address = parse_address("unix:pred.sock", short_dir)
    assert address is not None
    output = AppOutput("cam-out", PredictionServer(address, client_queue=8))
    seen: list[dict[str, Any]] = []
    output.add_callback(seen.append)
    output.start()
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(str(address.path))
    pipe = Pipeline(SyntheticDigits(seed=3), fps=500.0)
    pipe.control = _runner(control, tmp_path)
    pipe.app_output = output
    got: list[dict[str, Any]] = []

    def read() -> None:
        for record in read_predictions(address, timeout=10):
            got.append(record)
            if len(got) >= 20:
                return

    reader = threading.Thread(target=read)
    wait_until(lambda: output.server is not None and output.server.has_clients, 5, message="stalled client")
    reader.start()
    pipe.start()
    try:
        reader.join(timeout=30)
        wait_until(lambda: pipe.totals.get("frames", 0) >= 3000, 60, message="3000 frames past a stalled reader")
    finally:
        pipe.stop()
        output.stop()
        stalled.close()
    assert len(got) == 20 and got[0]["schema"] == "fleet.prediction/1" and got[0]["model"] == "digits:1.0"
    assert [r["seq"] for r in got] == sorted(r["seq"] for r in got)
    assert len(got[0]["scores"]) == 10 and got[0]["label"] in [str(i) for i in range(10)]
    assert len(seen) == pipe.totals["frames"]
    assert not address.path.exists()
