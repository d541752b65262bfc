"""The real Outbox and Uploader against the real endpoint on uvicorn, through a link we cut."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from edgefleet.edge_agent.outbox import Outbox
from edgefleet.edge_agent.uploader import Uploader, backoff_delay

from .harness import ControllerUnderTest, LinkProxy, clip_bytes, make_event

MiB = 1024 * 1024
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _outbox(tmp_path: Path, cap: int = 64 * MiB) -> Outbox:
    return Outbox(tmp_path / "outbox", max_bytes=cap, min_free_bytes=0)


def _uploader(url: str, outbox: Outbox, **kw) -> Uploader:
    kw.setdefault("max_bytes_per_day", 1 << 40)
    kw.setdefault("chunk_size", 64 * 1024)
    return Uploader(url, "dev-a", "tok-a", outbox, http_client=httpx.Client(timeout=5), **kw)


@pytest.fixture
def link(controller: ControllerUnderTest):
    proxy = LinkProxy(int(controller.url.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def test_uploader_delivers_every_item_most_important_first_and_empties_the_outbox(
    controller: ControllerUnderTest, tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path)
    clips = {}
    for i, prio in enumerate([1, 9, 5]):
        event = make_event(priority=prio)
        clips[event.event_id] = clip_bytes(150_000 + i, seed=i)
        outbox.put(event, clips[event.event_id], clip_bytes(3000, seed=-i), priority=prio)
    report = _uploader(controller.url, outbox).run_once(NOW)
    assert len(report.uploaded) == 3 and not report.offline
    assert [s.event.priority for s in controller.stored] == [9, 5, 1]
    for s in controller.stored:
        assert controller.blob_store.get(s.clip_digest) == clips[s.event.event_id]  # type: ignore[arg-type]
    assert outbox.pending() == [] and list((tmp_path / "outbox" / "files").iterdir()) == []


def test_upload_resumes_from_the_server_offset_after_the_link_drops_mid_clip(
    controller: ControllerUnderTest, link: LinkProxy, tmp_path: Path,
) -> None:
    clip = clip_bytes(2 * MiB, seed=42)
    outbox = _outbox(tmp_path)
    item_id = outbox.put(make_event(), clip, b"\xff\xd8keyframe", priority=3)
    link.cut_after = 1_300_000  # the link dies about 60% into the clip
    first = _uploader(link.url, outbox).run_once(NOW)
    assert first.offline and first.uploaded == []
    server_offset = controller.store.status("dev-a", outbox.get(item_id).upload_id).offsets["clip"]  # type: ignore[union-attr]
    assert 0 < server_offset < len(clip)
    assert outbox.get(item_id).acked_bytes == server_offset  # type: ignore[union-attr]
    outbox.close()

    link.heal()  # and the device restarted meanwhile: fresh outbox and uploader objects
    outbox = _outbox(tmp_path)
    second = _uploader(link.url, outbox).run_once(NOW)
    assert [i for i, _ in second.uploaded] == [item_id]
    assert second.bytes_sent < len(clip) - server_offset + 64 * 1024  # only the rest went again
    (stored,) = controller.stored
    assert controller.blob_store.get(stored.clip_digest) == clip  # type: ignore[arg-type]


def test_daily_byte_budget_is_honoured_and_items_wait_for_the_next_day(
    controller: ControllerUnderTest, tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path)
    for i in range(5):
        outbox.put(make_event(), clip_bytes(100_000, seed=i), None, priority=1)
    budget = 330_000
    day1 = _uploader(controller.url, outbox, max_bytes_per_day=budget).run_once(NOW)
    assert len(day1.uploaded) == 3 and day1.deferred_by_budget == 2
    assert day1.bytes_sent <= budget
    # later that day, and after a restart: the spent budget is remembered
    again = _uploader(controller.url, outbox, max_bytes_per_day=budget).run_once(
        NOW + timedelta(hours=5))
    assert again.uploaded == [] and again.bytes_sent == 0
    day2 = _uploader(controller.url, outbox, max_bytes_per_day=budget).run_once(
        NOW + timedelta(days=1))
    assert len(day2.uploaded) == 2 and day2.bytes_sent <= budget
    assert len(controller.stored) == 5


def test_uploader_backs_off_while_the_controller_is_down_then_delivers(
    controller: ControllerUnderTest, link: LinkProxy, tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path)
    outbox.put(make_event(), clip_bytes(50_000), None, priority=1)
    link.down()
    uploader = _uploader(link.url, outbox, backoff_base_s=0.05, backoff_max_s=0.4,
                         poll_interval_s=0.05, rng=random.Random(1))
    stop = threading.Event()
    worker = threading.Thread(target=uploader.run_forever, args=(stop,), daemon=True)
    worker.start()
    try:
        time.sleep(2.0)
        attempts = link.attempts
        # equal-jitter backoff 0.05 s doubling to 0.4 s allows at most ~10 tries in 2 s;
        # a tight loop would make hundreds
        assert 3 <= attempts <= 12
        link.heal()
        deadline = time.monotonic() + 10
        while outbox.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outbox.pending() == [] and len(controller.stored) == 1
    finally:
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()


def test_evicted_clip_still_reports_its_event_without_a_clip(
    controller: ControllerUnderTest, tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path, cap=1 * MiB)
    for i in range(12):  # the link is down; the cap evicts the oldest clips
        outbox.put(make_event(), clip_bytes(100_000, seed=i), None, priority=1)
    evicted = [i.item_id for i in outbox.pending(100) if i.clip_evicted]
    assert evicted
    report = _uploader(controller.url, outbox).run_once(NOW)
    assert len(report.uploaded) == 12 and outbox.pending() == []
    markers = [s for s in controller.stored if s.clip_evicted]
    assert len(markers) == len(evicted)
    assert all(s.clip_digest is None and s.event.clip_id is None for s in markers)


def test_item_refused_by_the_controller_is_dropped_not_retried_forever(
    tmp_path: Path,
) -> None:
    from .harness import start_controller

    small = start_controller(tmp_path / "small", max_clip_bytes=100_000)
    try:
        outbox = _outbox(tmp_path)
        outbox.put(make_event(), clip_bytes(200_000), None, priority=1)
        ok = outbox.put(make_event(), clip_bytes(50_000), None, priority=0)
        report = _uploader(small.url, outbox).run_once(NOW)
        assert len(report.dropped) == 1 and [i for i, _ in report.uploaded] == [ok]
        assert outbox.stats().dropped_items == 1 and outbox.pending() == []
    finally:
        small.stop()


@pytest.mark.parametrize(
    ("attempt", "u", "expected"),
    [(0, 0.0, 0.5), (0, 0.999, 0.9995), (3, 0.0, 4.0), (10, 0.5, 22.5), (10_000, 1.0, 30.0)],
)
def test_backoff_delay_doubles_with_equal_jitter_up_to_the_cap(attempt, u, expected) -> None:
    assert backoff_delay(attempt, base=1.0, cap=30.0, u=u) == pytest.approx(expected)
