"""The anti-replay window (``cloud/devices/replay_window.py``): a signed report whose seq is
below the highest accepted but within ``[controller] replay_window`` and not seen yet is
counted once, late — as when two controller replicas on a shared subscription commit one
device's messages out of order — and changes only what a late message may change; a replay,
a seq older than the window, a duplicate in one batch, a late period over a counted one are
refused. The batched and the per-message path store the same rows; two controllers on one
PostgreSQL applying the interleaved streams of several devices concurrently count every
message exactly once; window 1 keeps strict order.
"""

from __future__ import annotations

import random
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from edgefleet.cloud.devices import replay_window
from edgefleet.cloud.devices.history import DeviceHistory
from edgefleet.cloud.devices.replay_window import Replayed, place
from edgefleet.cloud.devices.telemetry_store import TelemetryPeriod
from edgefleet.cloud.errors import ConfigError
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.tables import Device
from edgefleet.protocols import Phase, Reported

from .conftest import Fleet, batched, one_by_one
from .test_batch_apply import _reported, _stored, _telemetry

# ----- the window itself (pure) -----


@pytest.mark.parametrize(("highest", "bits", "seq", "size", "expected"), [
    (None, None, 7, 64, (7, 0, False)),                       # the first one
    (10, 0, 11, (64), (11, 0b1, False)),                      # next: the old highest is bit 0
    (10, 0b1, 13, 64, (13, 0b1100, False)),                   # 10 and 9 move up by 3
    (10, 0b1, 80, 64, (80, 0, False)),                        # a jump past the window forgets it
    (10, 0, 8, 64, (10, 0b10, True)),                         # late: 8 is bit 1
    (10, 0b10, 9, 64, (10, 0b11, True)),
    (100, 0, 37, 64, (100, 1 << 62, True)),                   # the oldest the window holds
    (10, 0, 11, 1, (11, 0, False)),                           # window 1: no bits at all
    (10, (1 << 63) - 1, 11, 4, (11, 0b111, False)),           # bits past a smaller window dropped
])
def test_a_seq_in_the_window_is_placed(highest: int | None, bits: int | None, seq: int, size: int,
                                       expected: tuple[int, int, bool]) -> None:
    p = place(highest, bits, seq, size)
    assert (p.highest, p.bits, p.late) == expected and p.seq == seq
    assert 0 <= p.bits < 1 << 63  # fits a signed 64-bit column


@pytest.mark.parametrize(("highest", "bits", "seq", "size", "why"), [
    (10, 0, 10, 64, "accepted"),      # the highest itself
    (10, 0b10, 8, 64, "accepted"),    # already accepted late
    (100, 0, 36, 64, "too_old"),      # just past the window
    (10, 0, 9, 1, "too_old"),         # window 1: anything below the highest
])
def test_a_replay_or_a_seq_older_than_the_window_is_refused(highest: int, bits: int, seq: int, size: int,
                                                           why: str) -> None:
    with pytest.raises(Replayed) as err:
        place(highest, bits, seq, size)
    assert err.value.why == why


def test_every_seq_is_accepted_once_whatever_the_order() -> None:
    rng = random.Random(5)
    for _ in range(50):
        seqs = list(range(1000, 1040))
        rng.shuffle(seqs)
        highest, bits, taken = None, None, []
        for seq in seqs + seqs:  # every one twice
            try:
                p = place(highest, bits, seq, 64)
            except Replayed:
                continue
            highest, bits = p.highest, p.bits
            taken.append(seq)
        assert sorted(taken) == sorted(set(seqs))
        assert sorted(replay_window.accepted(highest, bits)) == sorted(seqs)


@pytest.mark.parametrize("bad", [0, 65, -1])
def test_replay_window_setting_is_validated(tmp_path: Path, bad: int) -> None:
    with pytest.raises((ConfigError, ValueError)):
        load_settings(tmp_path, env={}, replay_window=bad)
    with pytest.raises(ValueError, match="replay window"):
        place(1, 0, 2, bad)
    (tmp_path / "controller.toml").write_text(f"[controller]\nreplay_window = {bad}\n")
    with pytest.raises((ConfigError, ValueError), match="replay_window"):
        load_settings(tmp_path, env={})


# ----- against real databases, both paths -----


def _seqs(fleet: Fleet, device_id: str) -> int:
    """A base well above what the device's key signed so far: base+1, base+2 … are fresh."""
    return fleet.keys[device_id].seq + 10


def _history(c: Controller, device_id: str) -> list[tuple[str, str | None, Any]]:
    with c.session() as s:
        return [(h.kind, h.slot, h.data) for h in s.exec(select(DeviceHistory).where(DeviceHistory.device_id == device_id)
                                                         .order_by(col(DeviceHistory.id))).all()]


def _periods(c: Controller, device_id: str) -> list[tuple[datetime, datetime]]:
    with c.session() as s:
        return sorted((p.period_start.replace(tzinfo=None), p.period_end.replace(tzinfo=None))
                      for p in s.exec(select(TelemetryPeriod).where(TelemetryPeriod.device_id == device_id)).all())


def _device(c: Controller, device_id: str) -> Device:
    with c.session() as s:
        d = s.get(Device, device_id)
        assert d is not None
        return d


def test_six_then_five_counts_both_once_and_keeps_six(pair: tuple[Controller, Controller]) -> None:
    """Seq 5 and 6 applied 6-then-5 (per message on one database, as one batch on the other):
    both counted once, the current state from 6; then 5 again, a seq older than the window and
    a late period over a counted one are refused. Both databases end with the same rows."""
    one, many = pair
    fleet = Fleet([one, many], {})
    fleet.add("cam-1")
    base = _seqs(fleet, "cam-1")
    r4 = fleet.signed(_reported("cam-1", 1, Phase.DOWNLOADING), seq=base + 4)
    r5 = fleet.signed(_reported("cam-1", 2, Phase.VERIFYING, Phase.ROLLED_BACK, "E_NAN"), seq=base + 5)
    r6 = fleet.signed(_reported("cam-1", 3, Phase.ACTIVE), seq=base + 6)
    t5 = fleet.signed(_telemetry("cam-1", 5), seq=base + 15)
    t6 = fleet.signed(_telemetry("cam-1", 6), seq=base + 16)
    first = [r4]
    stream = [r6, t6, r5, t5]
    refused = [r5, t5,                                                           # replays of the late ones
               fleet.signed(_reported("cam-1", 9, Phase.FAILED), seq=base + 6 - 64),  # older than the window
               fleet.signed(_telemetry("cam-1", 6), seq=base + 14),               # in the window, period counted
               r6]
    expected = ["ok"] * 4 + ["replayed", "replayed", "replayed", "overlap", "replayed"]
    assert [one_by_one(one, m) for m in first + stream + refused] == ["ok"] + expected
    assert batched(many, first) == ["ok"]
    assert batched(many, stream + refused) == expected  # the replays inside the same batch too

    for c in (one, many):
        d = _device(c, "cam-1")
        assert d.reported_generation == 3 and d.reported is not None  # 6's state stands
        assert d.reported["slots"]["control"]["phase"] == "active" and "shadow" not in d.reported["slots"]
        assert d.telemetry is not None and d.telemetry["seq"] == t6.seq  # the latest period is 6's
        assert (d.report_seq, d.telemetry_seq) == (r6.seq, t6.seq)
        assert replay_window.accepted(d.report_seq, d.report_window) == [r6.seq, r5.seq, r4.seq]
        assert replay_window.accepted(d.telemetry_seq, d.telemetry_window) == [t6.seq, t5.seq]
        hist = _history(c, "cam-1")
        # 4: downloading; 6: downloading → active; 5 (late): verifying and its rollback, marked late
        assert [(k, slot, data["to"], data.get("late"), data.get("seq")) for k, slot, data in hist] == [
            ("phase", "control", "downloading", None, None), ("phase", "control", "active", None, None),
            ("phase", "control", "verifying", True, r5.seq), ("rollback", "shadow", "rolled_back", True, r5.seq)]
        assert len(_periods(c, "cam-1")) == 2
    assert _stored(one) == _stored(many)


def test_a_late_period_is_checked_against_the_batch_and_the_history_in_one_query(
        controller: Controller, caplog: pytest.LogCaptureFixture) -> None:
    """Two late periods in one batch that overlap each other: the second is refused; the
    counted-period lookup runs once for the whole batch."""
    from sqlalchemy import event

    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    fleet.add("cam-2")
    base = _seqs(fleet, "cam-1")
    base2 = _seqs(fleet, "cam-2")
    assert batched(controller, [fleet.signed(_telemetry("cam-1", 9), seq=base + 9),
                                fleet.signed(_telemetry("cam-2", 9), seq=base2 + 9)]) == ["ok", "ok"]
    lookups: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "telemetry_period" in statement:
            lookups.append(statement)

    event.listen(controller.engine, "before_cursor_execute", count)
    try:
        msgs = [fleet.signed(_telemetry("cam-1", 3), seq=base + 3),
                fleet.signed(_telemetry("cam-2", 4), seq=base2 + 4),
                fleet.signed(_telemetry("cam-1", 3), seq=base + 4),   # another seq, the same period
                fleet.signed(_telemetry("cam-1", 9), seq=base + 5),   # another seq, a period counted before
                fleet.signed(_telemetry("cam-1", 10), seq=base + 10)]  # in order
        assert batched(controller, msgs) == ["ok", "ok", "overlap", "overlap", "ok"]
    finally:
        event.remove(controller.engine, "before_cursor_execute", count)
    assert len(lookups) == 1
    assert len(_periods(controller, "cam-1")) == 3 and len(_periods(controller, "cam-2")) == 2


def _strict(tmp_path: Path, name: str, url: str | None = None) -> Controller:
    settings = load_settings(tmp_path / name, env={}, replay_window=1, **({"database_url": url} if url else {}))
    c = Controller(settings)
    c.migrate()
    return c


def test_window_one_keeps_strict_order(tmp_path: Path) -> None:
    one, many = _strict(tmp_path, "one"), _strict(tmp_path, "many")
    try:
        fleet = Fleet([one, many], {})
        fleet.add("cam-1")
        base = _seqs(fleet, "cam-1")
        msgs = [fleet.signed(_reported("cam-1", 2, Phase.ACTIVE), seq=base + 6),
                fleet.signed(_reported("cam-1", 1, Phase.VERIFYING), seq=base + 5),
                fleet.signed(_telemetry("cam-1", 6), seq=base + 16),
                fleet.signed(_telemetry("cam-1", 5), seq=base + 15)]
        assert [one_by_one(one, m) for m in msgs] == ["ok", "replayed", "ok", "replayed"]
        assert batched(many, msgs) == ["ok", "replayed", "ok", "replayed"]
        for c in (one, many):
            d = _device(c, "cam-1")
            assert d.report_window == 0 and d.telemetry_window == 0
            assert len(_history(c, "cam-1")) == 1 and len(_periods(c, "cam-1")) == 1
    finally:
        one.engine.dispose()
        many.engine.dispose()


def test_an_attacker_replaying_captured_messages_in_any_order_gets_nothing_twice(controller: Controller) -> None:
    """Every signed message of a device captured off the wire, fed back shuffled, many times,
    after and between the real ones: each counted once, the newest state stands."""
    fleet = Fleet([controller], {})
    fleet.add("cam-1")
    base = _seqs(fleet, "cam-1")
    phases = (Phase.DOWNLOADING, Phase.VERIFYING, Phase.ACTIVE, Phase.HEALTHY)
    captured = []
    for n in range(8):
        captured.append(fleet.signed(_reported("cam-1", n + 1, phases[n % 4]), seq=base + 2 * n))
        captured.append(fleet.signed(_telemetry("cam-1", n), seq=base + 2 * n + 1))
    rng = random.Random(11)
    real = captured[:]
    rng.shuffle(real)  # the real ones arrive out of order too (within the window)
    outcomes = batched(controller, real[:8]) + [one_by_one(controller, m) for m in real[8:]]
    assert outcomes == ["ok"] * 16
    counted_periods = len(_periods(controller, "cam-1"))
    history = len(_history(controller, "cam-1"))
    for _ in range(5):
        replay = captured[:]
        rng.shuffle(replay)
        assert set(batched(controller, replay[:10])) <= {"replayed"}
        assert {one_by_one(controller, m) for m in replay[10:]} <= {"replayed"}
    assert len(_periods(controller, "cam-1")) == counted_periods
    assert len(_history(controller, "cam-1")) == history
    d = _device(controller, "cam-1")
    assert d.reported_generation == 8 and d.report_seq == base + 14  # the newest seq's state


def test_two_controllers_on_one_postgres_count_every_message_once(tmp_path: Path, postgres: str) -> None:
    """A shared subscription's round robin: device messages alternate between two controllers
    on one PostgreSQL, each applying its share concurrently (one in batches, one message at a
    time), so one device's messages commit out of order. Every message counts exactly once."""
    from .conftest import controller_on

    a, b = controller_on(tmp_path / "a", postgres), controller_on(tmp_path / "b", postgres)
    try:
        fleet = Fleet([a], {})
        devices = [f"cam-{i}" for i in range(4)]
        for d in devices:
            fleet.add(d)
        stream: list[Any] = []
        for n in range(12):
            for d in devices:
                stream.append(fleet.signed(_reported(d, n + 1, Phase.ACTIVE if n % 2 else Phase.VERIFYING)))
                stream.append(fleet.signed(_telemetry(d, n)))
        shares: tuple[list[Any], list[Any]] = ([], [])
        for i, m in enumerate(stream):
            shares[(i // 3) % 2].append(m)  # runs of three to each, as a broker hands them out
        results: dict[str, list[str]] = {}

        def run_batches() -> None:
            rng, out, msgs = random.Random(3), [], shares[0]
            i = 0
            while i < len(msgs):
                k = rng.randint(1, 6)
                out += batched(a, msgs[i:i + k])
                i += k
            results["a"] = out

        def run_one_by_one() -> None:
            results["b"] = [one_by_one(b, m) for m in shares[1]]

        threads = [threading.Thread(target=run_batches), threading.Thread(target=run_one_by_one)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert set(results["a"]) == {"ok"} and set(results["b"]) == {"ok"}, results
        with a.session() as s:
            ends = [(p.device_id, p.period_end) for p in s.exec(select(TelemetryPeriod).order_by(col(TelemetryPeriod.id)))]
        reordered = 0
        for d in devices:
            mine_ends = [e for dd, e in ends if dd == d]
            reordered += sum(1 for x, y in zip(mine_ends, mine_ends[1:]) if y < x)
        assert reordered > 0  # the race happened: periods committed out of order, each still counted
        for d in devices:
            mine = [m for m in stream if m.device_id == d]
            reports = [m.seq for m in mine if isinstance(m, Reported)]
            row = _device(a, d)
            assert replay_window.accepted(row.report_seq, row.report_window) == sorted(reports, reverse=True)
            assert row.reported_generation == 12  # the newest report's state, whichever replica applied it
            assert len(_periods(a, d)) == 12  # every period once
            with a.session() as s:
                rows = s.exec(select(DeviceHistory).where(DeviceHistory.device_id == d)).all()
            assert 1 <= len(rows) <= 12  # one row per phase change (in order) or late phase, never doubled
        # and everything again, at both: nothing counts twice
        assert set(batched(a, stream)) == {"replayed"}
        assert {one_by_one(b, m) for m in stream[:8]} == {"replayed"}
    finally:
        a.engine.dispose()
        b.engine.dispose()
