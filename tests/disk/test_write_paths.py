"""Each device write path against a real full tmpfs: nothing raises out of the agent,
nothing half-written stays, what was stored before is kept, and it writes again once
there is room. Plus the pure space plan and the re-verification of unpacked bundles."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from edgefleet.atomicio import atomic_write
from edgefleet.edge_agent.disk import MARGIN_BYTES, DiskWatch, is_disk_full, space_needed
from edgefleet.edge_agent.outbox import Outbox, OutboxFull
from edgefleet.edge_agent.report_signer import SEQ_FILE, ReportSigner
from edgefleet.edge_agent.state import AgentState, StateStore
from edgefleet.hardware.cache import EngineCache
from edgefleet.protocols import Event, ModelOutput, Phase
from edgefleet.registry.bundle import (
    RECORD_FILE,
    InvalidBundle,
    hash_files,
    record_bytes,
    verify_unpacked,
)

from .conftest import fill, unfill


def _event() -> Event:
    return Event(device_id="dev-a", event_id=uuid.uuid4().hex, trigger="disagreement", priority=1,
                 control=ModelOutput(label="3", score=0.4), candidate=ModelOutput(label="8", score=0.8), frame_index=1)


@pytest.mark.parametrize(("length", "have", "unpacked", "downloaded", "download"), [
    (10_000_000, 0, 10_000_000, False, 10_000_000),
    (10_000_000, 4_000_000, 10_000_000, False, 6_000_000),  # the part kept counts
    (10_000_000, 0, 9_000_000, True, 0),  # downloaded already: only the unpack is left
    (10_000_000, 12_000_000, 10_000_000, False, 0),
])
def test_space_plan_counts_what_is_left_to_download_plus_the_unpack(length, have, unpacked, downloaded, download) -> None:
    plan = space_needed(length=length, have=have, unpacked=unpacked, free=0, downloaded=downloaded)
    assert plan.download == download and plan.unpack == unpacked
    assert plan.needed == download + unpacked + MARGIN_BYTES + length // 100
    assert not plan.fits and space_needed(length=length, have=have, unpacked=unpacked, free=plan.needed,
                                          downloaded=downloaded).fits


def test_state_save_on_a_full_disk_keeps_the_old_file_and_writes_again_later(small_disk) -> None:
    disk = small_disk("1m")
    watch = DiskWatch()
    store = StateStore(disk, watch)
    old = AgentState(generation=1)
    assert store.save(old)
    filler = fill(disk)
    new = AgentState(generation=2)
    new.slot("control").phase = Phase.DOWNLOADING
    assert store.save(new) is False  # no exception: the agent goes on
    assert store.load().generation == 1 and store.unsaved
    cond = watch.current()
    assert cond is not None and cond.what == "state" and cond.bytes_needed > cond.bytes_free
    assert not list(disk.glob(".state.json.*.tmp"))
    filler.unlink()
    assert store.save(new)
    assert store.load().generation == 2 and watch.current() is None


def test_report_sequence_keeps_increasing_on_a_full_disk_and_across_a_restart(small_disk) -> None:
    disk = small_disk("1m")
    signer = ReportSigner(disk, "dev-a")
    first = signer.next_seq()
    fill(disk)
    seqs = [signer.next_seq() for _ in range(600)]  # two new reservations while full: rewritten in place
    assert seqs == sorted(set(seqs)) and seqs[0] > first
    reserved = int((disk / "identity" / SEQ_FILE).read_text())
    assert reserved > seqs[-1]
    again = ReportSigner(disk, "dev-a")  # a restart never reuses a number
    assert again.next_seq() >= reserved
    unfill(disk)


def test_outbox_on_a_full_disk_refuses_with_the_figures_and_keeps_what_it_has(small_disk) -> None:
    disk = small_disk("4m")
    box = Outbox(disk / "outbox", max_bytes=3 * 1024 * 1024, min_free_bytes=0)
    try:
        kept = box.put(_event(), b"x" * 100_000, None, priority=1)
        fill(disk)
        with pytest.raises(OutboxFull) as ei:
            box.put(_event(), b"y" * 500_000, None, priority=1)
        assert ei.value.code == "E_DISK_FULL" and ei.value.needed and ei.value.needed > (ei.value.free or 0)
        assert [i.item_id for i in box.pending()] == [kept]
        assert box.get(kept).clip_path.read_bytes() == b"x" * 100_000
        assert not [p for p in (disk / "outbox" / "files").iterdir() if p.name.startswith(".tmp")]
        unfill(disk)
        assert box.put(_event(), b"z" * 100_000, None, priority=1) > kept
    finally:
        box.close()


def test_engine_built_on_a_full_disk_runs_from_memory_uncached(small_disk) -> None:
    disk = small_disk("1m")
    cache = EngineCache(disk / "engines")
    key = cache.key(model_digest="ab" * 32, trt_version="10.0", compute_capability="8.7", precision="fp16")
    (disk / "engines").mkdir()
    fill(disk)
    engine, built = cache.get_or_build(key, lambda: b"E" * 300_000, lambda data: ("engine", len(data)))
    assert built and engine == ("engine", 300_000)
    assert cache.store_failures == 1 and cache.load(key) is None
    assert not [p for p in (disk / "engines").rglob("*") if p.is_file()]
    unfill(disk)
    engine, built = cache.get_or_build(key, lambda: b"E" * 300_000, lambda data: ("engine", len(data)))
    assert built and cache.load(key) == b"E" * 300_000


def test_unpacked_bundle_is_reverified_from_its_record(tmp_path: Path) -> None:
    d = tmp_path / "b"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    (d / "model.onnx").write_bytes(b"weights" * 1000)
    digest = "cd" * 32
    assert verify_unpacked(d, digest) is False  # no record: an older layout
    atomic_write(d / RECORD_FILE, record_bytes(digest, hash_files(d, ["manifest.json", "model.onnx"])))
    assert verify_unpacked(d, digest) is True
    with pytest.raises(InvalidBundle):
        verify_unpacked(d, "ef" * 32)  # the record of another bundle
    data = bytearray((d / "model.onnx").read_bytes())
    data[10] ^= 1
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(InvalidBundle, match="changed on disk"):
        verify_unpacked(d, digest)
    assert json.loads((d / RECORD_FILE).read_text())["bundle_digest"] == digest


def test_disk_full_is_recognised_through_causes() -> None:
    import errno
    import sqlite3

    assert is_disk_full(OSError(errno.ENOSPC, "no space"))
    assert is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = OSError(errno.ENOSPC, "no space")
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "denied"))


def test_clip_on_a_full_disk_still_publishes_its_event_and_reports_the_shortage(small_disk) -> None:
    import numpy as np

    from edgefleet.edge_agent.capture import Capture, Pending
    from edgefleet.protocols import ModelRef
    from edgefleet.shadow import Observation, Prediction, ReadyClip
    from edgefleet.shadow.triggers import Trigger

    disk = small_disk("2m")
    box = Outbox(disk / "outbox", max_bytes=1024 * 1024, min_free_bytes=0)
    published: list[Event] = []
    watch = DiskWatch()
    capture = Capture("dev-a", box, published.append, work_dir=disk / "work")
    capture.disk_watch = watch
    ref = ModelRef(name="digits", version="1.0", digest="ab" * 32)
    pred = Prediction(task="classification", label="3", score=0.4)
    rng = np.random.default_rng(0)
    frames = [(i / 10, rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for i in range(20)]
    try:
        fill(disk)
        pending = Pending(event_id=uuid.uuid4().hex, observation=Observation(pred, pred, None, capture=Trigger("sampled", 1)),
                          control=ref, candidate=ref, wall_ts=0.0)
        event = capture.write(ReadyClip("c1", 1.0, frames, True, payload=pending))  # never raises
        assert event is not None and [e.event_id for e in published] == [event.event_id]
        assert capture.counts["disk_full"] >= 1
        assert watch.current() is not None and watch.current().code == "E_DISK_FULL"
        assert not [p for p in (disk / "work").iterdir()] if (disk / "work").exists() else True
        unfill(disk)
        pending2 = Pending(event_id=uuid.uuid4().hex, observation=Observation(pred, pred, None, capture=Trigger("sampled", 1)),
                           control=ref, candidate=ref, wall_ts=0.0)
        capture.write(ReadyClip("c2", 1.0, frames, True, payload=pending2))
        assert box.stats().items >= 1 and not watch.active("outbox")
    finally:
        box.close()
