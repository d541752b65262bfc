"""Sidecar signals, the pure part: sample checks, the latest-value table, the merge."""

from __future__ import annotations

import json

import pytest

from edgefleet.edge_agent.signals import MAX_LINE, SampleError, SignalTable, merge, parse_sample


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_a_sample_gives_its_time_and_signals_and_arrival_when_it_has_no_time() -> None:
    assert parse_sample(_line({"t": 99.5, "signals": {"steering_deg": -25.0, "gear": "D", "brake": True}}), 100.0) == (
        99.5, {"steering_deg": -25.0, "gear": "D", "brake": True})
    assert parse_sample(_line({"signals": {"speed_kmh": 12}}), 100.0) == (100.0, {"speed_kmh": 12})
    # a writer's clock ahead of ours cannot keep a value fresh for ever
    t, _ = parse_sample(_line({"t": 1e9, "signals": {"x": 1}}), 100.0)
    assert t <= 100.1


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json", "malformed"),
    (b"[1, 2]", "malformed"),
    (_line({"signals": [1]}), "malformed"),
    (_line({"sig": {"x": 1}}), "malformed"),
    (_line({"signals": {"x": 1}, "extra": 1}), "malformed"),
    (_line({"schema": "other/1", "signals": {"x": 1}}), "malformed"),
    (_line({"signals": {"bad key!": 1}}), "malformed"),
    (_line({"signals": {"x": None}}), "malformed"),
    (_line({"signals": {"x": {"nested": 1}}}), "malformed"),
    (_line({"signals": {"x": 2**80}}), "malformed"),
    (_line({"t": "yesterday", "signals": {"x": 1}}), "malformed"),
    (b'{"signals": {"x": NaN}}', "non_finite"),
    (b'{"signals": {"x": Infinity}}', "non_finite"),
    (b'{"t": -Infinity, "signals": {"x": 1}}', "non_finite"),
    (b'{"signals": {"x": 1e999}}', "non_finite"),
    (_line({"signals": {"x": "v" * 129}}), "oversize"),
    (_line({"signals": {f"k{i}": i for i in range(33)}}), "oversize"),
    (b'{"signals": {"x": "' + b"a" * MAX_LINE + b'"}}', "oversize"),
    (b"[" * 3000, "malformed"),
])
def test_bad_samples_are_refused_with_the_reason_they_are_counted_under(raw: bytes, reason: str) -> None:
    with pytest.raises(SampleError) as exc:
        parse_sample(raw, 100.0)
    assert exc.value.reason == reason


def test_stale_signals_are_left_out_and_a_late_sample_does_not_overwrite_a_newer_one() -> None:
    table = SignalTable(max_age_s=0.5)
    table.update(10.0, {"steering_deg": -25.0, "speed_kmh": 12}, now=10.0)
    table.update(10.4, {"speed_kmh": 14}, now=10.4)
    assert table.at(10.3) == {"steering_deg": -25.0, "speed_kmh": 12}  # at 10.3 speed was still 12
    assert table.at(10.45) == {"steering_deg": -25.0, "speed_kmh": 14}
    assert table.at(10.6) == {"speed_kmh": 14}  # steering is 0.6 s old: not this frame's
    assert table.at(11.0) == {}
    table.update(10.2, {"speed_kmh": 99}, now=11.0)  # arrived late, older than what is held
    assert table.snapshot()["speed_kmh"] == (10.4, 14)


def test_a_frame_judged_late_gets_the_values_at_its_own_time_not_newer_ones() -> None:
    table = SignalTable(max_age_s=0.5)
    for k in range(100):  # a 100 Hz CAN signal: straight, then a left turn from 10.5 s
        t = 10.0 + k / 100
        table.update(t, {"steering_deg": 2.0 if t < 10.5 else -25.0}, now=t)
    assert table.at(10.99) == {"steering_deg": -25.0}
    assert table.at(10.4) == {"steering_deg": 2.0}  # taken before the turn, judged after it
    assert table.at(9.9) == {}  # before the first sample: nothing known
    assert table.at(11.6) == {}  # the bridge went quiet: stale
    assert len(table._series["steering_deg"].ts) <= 2 * 100 // 3  # thinned: two points per 31 ms grain
    for k in range(2000):  # 20 s more: the history stays bounded
        table.update(11.0 + k / 100, {"steering_deg": float(k)}, now=11.0 + k / 100)
    assert len(table._series["steering_deg"].ts) <= SignalTable.MAX_POINTS
    assert table.at(30.98) == {"steering_deg": 1998.0} or table.at(30.98) == {"steering_deg": 1997.0}


def test_the_table_is_bounded_and_a_stale_signal_makes_room_for_a_new_one() -> None:
    table = SignalTable(max_age_s=0.5, max_keys=3)
    table.update(1.0, {"a": 1, "b": 2, "c": 3}, now=1.0)
    assert table.update(1.1, {"d": 4}, now=1.1) == 1 and table.refused_keys == 1  # full of fresh ones
    assert "d" not in table.at(1.1)
    table.update(2.0, {"b": 5, "c": 6}, now=2.0)  # a is stale now
    assert table.update(2.0, {"d": 4}, now=2.0) == 0
    assert table.at(2.0) == {"b": 5, "c": 6, "d": 4}
    assert SignalTable(max_keys=500).max_keys == 32


def test_merge_the_per_frame_context_wins_and_stays_within_32_keys() -> None:
    assert merge({}, None) is None and merge({}, {}) is None
    assert merge({"steering_deg": -25.0}, None) == {"steering_deg": -25.0}
    assert merge({}, {"road": "wet"}) == {"road": "wet"}
    assert merge({"steering_deg": -25.0, "speed_kmh": 0}, {"speed_kmh": 12}) == {"steering_deg": -25.0, "speed_kmh": 12}
    many = merge({f"s{i:02d}": i for i in range(32)}, {f"f{i:02d}": i for i in range(20)})
    assert many is not None and len(many) == 32
    assert all(f"f{i:02d}" in many for i in range(20)) and "s00" in many and "s31" not in many
