"""The outbox stays under its byte cap, evicting lowest-priority-then-oldest clips."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from edgefleet.edge_agent.outbox import (
    ItemTooLarge,
    Outbox,
    OutboxFull,
    _Candidate,
    plan_eviction,
)

from .harness import clip_bytes, make_event

MiB = 1024 * 1024


def _bytes_on_disk(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


def test_disk_cap_holds_while_link_is_down_and_lowest_priority_goes_first(tmp_path: Path) -> None:
    cap = 2 * MiB
    rng = random.Random(7)
    outbox = Outbox(tmp_path / "ob", max_bytes=cap, min_free_bytes=0)
    high: list[int] = []
    for i in range(180):  # a long outage: ~8x the cap offered, nothing uploaded
        priority = 100 if i % 30 == 0 else rng.randint(0, 9)
        before = {it.item_id for it in outbox.pending(limit=1000) if not it.clip_evicted}
        item_id = outbox.put(make_event(priority=priority), clip_bytes(90_000, seed=i),
                             clip_bytes(6_000, seed=-i), priority=priority)
        now = {it.item_id: it for it in outbox.pending(limit=1000)}
        lost = [now[k].priority for k in (before | {item_id}) if now[k].clip_evicted]
        kept_now = [it.priority for it in now.values() if not it.clip_evicted]
        # what this put evicted was the lowest-priority clips there were (room freed by an
        # earlier eviction may later take a lower newcomer: the order holds at each eviction)
        assert not lost or not kept_now or max(lost) <= min(kept_now), (i, lost, min(kept_now))
        if priority == 100:
            high.append(item_id)
        assert _bytes_on_disk(tmp_path / "ob") <= cap
        assert outbox.stats().bytes <= cap
    items = outbox.pending(limit=1000)
    assert len(items) == 180  # every event is kept, evicted clips as markers
    kept = [i for i in items if not i.clip_evicted]
    evicted = [i for i in items if i.clip_evicted]
    assert {i.item_id for i in kept} >= set(high)  # the important clips all survived
    assert all(i.clip_path is None and i.clip_size == 0 for i in evicted)
    assert outbox.stats().evicted_clips == len(evicted) > 140
    # the most important items come first
    assert [i.priority for i in items] == sorted((i.priority for i in items), reverse=True)
    outbox.close()


def test_newcomer_with_lowest_priority_loses_its_own_clip_not_an_older_important_one(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "ob", max_bytes=1 * MiB, min_free_bytes=0)
    for i in range(8):
        outbox.put(make_event(), clip_bytes(90_000, seed=i), None, priority=5)
    before = {i.item_id for i in outbox.pending(100) if not i.clip_evicted}
    low = outbox.put(make_event(), clip_bytes(90_000, seed=99), None, priority=1)
    after = {i.item_id for i in outbox.pending(100) if not i.clip_evicted}
    item = outbox.get(low)
    assert item is not None and item.clip_evicted and low not in after
    assert after == before


def test_equal_priority_evicts_the_oldest_clip(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "ob", max_bytes=1 * MiB, min_free_bytes=0)
    ids = [outbox.put(make_event(), clip_bytes(90_000, seed=i), None, priority=3) for i in range(20)]
    evicted = [i for i in ids if outbox.get(i).clip_evicted]  # type: ignore[union-attr]
    assert evicted and evicted == ids[: len(evicted)]


def test_item_larger_than_the_cap_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "ob", max_bytes=1 * MiB, min_free_bytes=0)
    with pytest.raises(ItemTooLarge, match="exceeds the outbox cap"):
        outbox.put(make_event(), clip_bytes(2 * MiB), None, priority=1)
    assert outbox.stats().items == 0


def test_disk_below_min_free_bytes_refuses_instead_of_filling_it(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    outbox = Outbox(tmp_path / "ob", max_bytes=64 * MiB, min_free_bytes=free * 2)
    with pytest.raises(OutboxFull):
        outbox.put(make_event(), clip_bytes(10_000), None, priority=1)


def test_put_from_a_file_survives_reopen_and_mark_uploaded_deletes_files(tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    src.write_bytes(clip_bytes(300_000))
    event = make_event()
    with Outbox(tmp_path / "ob", max_bytes=8 * MiB, min_free_bytes=0) as outbox:
        item_id = outbox.put(event, src, b"\xff\xd8jpeg", priority=2)
        outbox.set_progress(item_id, 12345)
    with Outbox(tmp_path / "ob", max_bytes=8 * MiB, min_free_bytes=0) as outbox:
        (item,) = outbox.pending()
        assert item.event == event and item.acked_bytes == 12345
        assert item.clip_content_type == "video/mp4"
        assert item.clip_path is not None and item.clip_path.read_bytes() == src.read_bytes()
        outbox.mark_uploaded(item_id)
        assert outbox.pending() == [] and list((tmp_path / "ob" / "files").iterdir()) == []


def test_orphan_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    Outbox(tmp_path / "ob", max_bytes=8 * MiB, min_free_bytes=0).close()
    (tmp_path / "ob" / "files" / ".tmp-abc.clip").write_bytes(b"half")
    (tmp_path / "ob" / "files" / "deadbeef.clip").write_bytes(b"never committed")
    Outbox(tmp_path / "ob", max_bytes=8 * MiB, min_free_bytes=0).close()
    assert list((tmp_path / "ob" / "files").iterdir()) == []


@pytest.mark.parametrize(
    ("candidates", "need", "new_priority", "expected"),
    [
        ([(1, 0, 10), (2, 0, 10), (3, 5, 10)], 15, 5, [1, 2]),
        ([(1, 0, 10), (2, 5, 10)], 15, 5, [1, 2]),  # equal priority: older goes
        ([(1, 0, 10), (2, 7, 10)], 15, 5, None),  # would need a more important clip
        ([], 1, 9, None),
        ([(1, 2, 10)], 0, 0, []),
    ],
)
def test_plan_eviction(candidates, need, new_priority, expected) -> None:
    plan = plan_eviction([_Candidate(*c) for c in candidates], need, new_priority)
    assert (None if plan is None else [c.item_id for c in plan]) == expected
