"""``merge_into_wire`` (the controller's fold of one period into a stored pair row) gives
exactly what ``merge_shadow_stats`` of the two, dumped, gives — or None where that refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgefleet.protocols import LatencyStats, ModelRef, ShadowStats
from edgefleet.protocols.messages import MAX_OPEN_KEYS
from edgefleet.shadow import merge_into_wire, merge_shadow_stats

A = ModelRef(name="cand", version="2", digest="a" * 64)
B = ModelRef(name="cand", version="3", digest="b" * 64)

labels = st.sampled_from(["cat", "dog", "3", "8", "none", "bus"])
counts = st.integers(min_value=0, max_value=10**6)
latency = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def shadow_stats(draw: Any) -> ShadowStats:
    frames = draw(st.integers(min_value=0, max_value=10**5))
    disagreements = draw(st.integers(min_value=0, max_value=frames))
    return ShadowStats(
        candidate=draw(st.sampled_from([A, B, None])),
        frames=frames, dropped=draw(counts), disagreements=disagreements,
        agreement=(1 - disagreements / frames) if frames else None,
        per_class_disagreements=draw(st.dictionaries(labels, counts, max_size=4)),
        latency_ms=LatencyStats(**{k: draw(latency) for k in ("p50", "p95", "p99", "mean", "max")}),
        confusion=draw(st.dictionaries(labels, st.dictionaries(labels, counts, max_size=3), max_size=3)),
        nan_outputs=draw(counts), errors=draw(counts))


def slow(stored: dict[str, Any], s: ShadowStats) -> dict[str, Any]:
    return merge_shadow_stats([ShadowStats.model_validate(stored), s]).model_dump(mode="json")


@settings(max_examples=300, deadline=None)
@given(st.lists(shadow_stats(), min_size=2, max_size=5))
def test_folding_period_after_period_matches_merge_shadow_stats(periods: list[ShadowStats]) -> None:
    stored = periods[0].model_dump(mode="json")
    for s in periods[1:]:
        fast = merge_into_wire(stored, s)
        assert fast == slow(stored, s)
        assert list(fast) == list(ShadowStats.model_fields)  # the dump's key order, too
        stored = fast


def test_a_different_candidate_clears_it_as_merge_shadow_stats_does() -> None:
    stored = ShadowStats(candidate=A, frames=10, disagreements=1, agreement=0.9).model_dump(mode="json")
    out = merge_into_wire(stored, ShadowStats(candidate=B, frames=5, disagreements=0, agreement=1.0))
    assert out is not None and out["candidate"] is None
    assert out == slow(stored, ShadowStats(candidate=B, frames=5, disagreements=0, agreement=1.0))


def test_too_many_classes_falls_back_to_the_refusal() -> None:
    stored = ShadowStats(frames=1, per_class_disagreements={f"a{i}": 1 for i in range(MAX_OPEN_KEYS)}).model_dump(mode="json")
    s = ShadowStats(frames=1, per_class_disagreements={"new": 1})
    assert merge_into_wire(stored, s) is None
    with pytest.raises(ValidationError):
        slow(stored, s)


def test_a_count_past_64_bits_falls_back_to_the_refusal() -> None:
    stored = ShadowStats(frames=1, confusion={"a": {"b": 2**63 - 1}}).model_dump(mode="json")
    s = ShadowStats(frames=1, confusion={"a": {"b": 1}})
    assert merge_into_wire(stored, s) is None
    with pytest.raises(ValidationError):
        slow(stored, s)


def test_more_disagreements_than_frames_falls_back_to_the_refusal() -> None:
    stored = ShadowStats(frames=1, disagreements=5).model_dump(mode="json")
    s = ShadowStats(frames=1, disagreements=5)
    assert merge_into_wire(stored, s) is None
    with pytest.raises(ValidationError):  # agreement below 0
        slow(stored, s)


def test_an_overflowing_latency_falls_back_to_the_refusal() -> None:
    stored = ShadowStats(frames=10**5, latency_ms=LatencyStats(mean=1.7e308)).model_dump(mode="json")
    s = ShadowStats(frames=10**5, latency_ms=LatencyStats(mean=1.7e308))
    assert merge_into_wire(stored, s) is None
    with pytest.raises(ValidationError):
        slow(stored, s)


def test_an_older_row_without_every_field_takes_the_full_merge() -> None:
    stored = ShadowStats(candidate=A, frames=4, disagreements=1, agreement=0.75).model_dump(mode="json")
    del stored["nan_outputs"]
    s = ShadowStats(candidate=A, frames=4, disagreements=0, agreement=1.0)
    assert merge_into_wire(stored, s) is None
    assert slow(stored, s)["frames"] == 8
