from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from edgefleet.protocols import ModelRef, ShadowStats, Telemetry, decode, encode
from edgefleet.shadow import (
    AgreementStats,
    ClassificationComparator,
    ConfidenceHistogram,
    LatencyRecorder,
    merge_shadow_stats,
)

from .conftest import COLOURS, cls_pred

REF = ModelRef(name="cand", version="2", digest="a" * 64)


def random_comparisons(n: int, seed: int):
    rng = np.random.default_rng(seed)
    comp = ClassificationComparator(max_distance=0.6)
    out = []
    for _ in range(n):
        a, b = rng.dirichlet([1, 1, 1]), rng.dirichlet([1, 1, 1])
        out.append(comp.compare(cls_pred(a), cls_pred(b)))
    return out


def stats_of(comparisons, latencies=()):
    s = AgreementStats()
    for i, c in enumerate(comparisons):
        s.add(c, latency_ms=latencies[i] if latencies else None)
    return s


def wire(s: AgreementStats) -> dict:
    return s.to_shadow_stats(REF).model_dump()


def test_merge_is_associative_commutative_and_matches_a_direct_computation():
    comps = random_comparisons(300, seed=1)
    lat = list(np.random.default_rng(2).lognormal(1.0, 0.5, 300))
    a, b, c = stats_of(comps[:80], lat[:80]), stats_of(comps[80:200], lat[80:200]), stats_of(comps[200:], lat[200:])
    a.add_dropped(3)
    c.add_dropped(2)
    left, right, swapped = (a + b) + c, a + (b + c), c.merge(b).merge(a)
    whole = stats_of(comps, lat)
    whole.add_dropped(5)
    assert wire(left) == wire(right) == wire(swapped) == wire(whole)
    assert left.control_confidence == whole.control_confidence

    # and the whole agrees with counting by hand
    agree = sum(c.agree for c in comps)
    confusion = Counter((c.control_label, c.candidate_label) for c in comps)
    per_class = Counter(c.control_label for c in comps if not c.agree)
    st = whole.to_shadow_stats(REF)
    assert st.frames == 300 and st.dropped == 5 and st.disagreements == 300 - agree
    assert st.agreement == pytest.approx(agree / 300)
    assert st.per_class_disagreements == dict(per_class)
    assert {(k, j): n for k, row in st.confusion.items() for j, n in row.items()} == dict(confusion)
    assert sum(whole.control_confidence.counts) == 300


def test_shadow_stats_round_trip_on_the_wire_inside_telemetry():
    s = stats_of(random_comparisons(50, seed=3), [5.0] * 50)
    t = Telemetry(device_id="dev-1", period_start="2026-01-01T00:00:00Z", period_end="2026-01-01T00:00:10Z",
                  shadow=s.to_shadow_stats(REF))
    back = decode(encode(t), Telemetry)
    assert back.shadow.agreement == pytest.approx(s.agreement)
    assert back.shadow.latency_ms.p50 == pytest.approx(5.0, rel=0.02)


def test_empty_stats_have_no_agreement():
    st = AgreementStats().to_shadow_stats()
    assert st.agreement is None and st.frames == 0 and st.confusion == {}


def test_confusion_is_capped_to_the_largest_cells():
    s = AgreementStats()
    comp = ClassificationComparator()
    labels = [f"c{i}" for i in range(30)]
    rng = random.Random(0)
    for _ in range(2000):
        i, j = rng.randrange(30), rng.randrange(30)
        pa, pb = np.full(30, 0.01), np.full(30, 0.01)
        pa[i], pb[j] = 0.71, 0.71
        s.add(comp.compare(cls_pred(pa, labels), cls_pred(pb, labels)))
    st = s.to_shadow_stats(max_confusion_cells=50)
    assert sum(len(row) for row in st.confusion.values()) == 50
    kept_min = min(n for row in st.confusion.values() for n in row.values())
    assert kept_min >= sorted(s.confusion.values(), reverse=True)[49]


def test_confidence_histogram_bins_and_merge():
    h = ConfidenceHistogram()
    for v in [0.0, 0.05, 0.1, 0.55, 0.999, 1.0, float("nan")]:
        h.add(v)
    assert h.to_list() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert h.merge(h).to_list() == [4, 2, 0, 0, 0, 2, 0, 0, 0, 4]


def test_latency_percentiles_are_within_one_percent_and_merge_exactly():
    samples = np.random.default_rng(5).lognormal(2.0, 1.0, 20000)
    whole = LatencyRecorder()
    a, b = LatencyRecorder(), LatencyRecorder()
    for i, v in enumerate(samples):
        whole.add(float(v))
        (a if i % 3 else b).add(float(v))
    merged = a.merge(b)
    for q in (0.5, 0.95, 0.99):
        true = float(np.quantile(samples, q, method="inverted_cdf"))
        assert whole.percentile(q) == pytest.approx(true, rel=0.011)
        assert merged.percentile(q) == whole.percentile(q)
    ls = merged.to_latency_stats()
    assert ls.mean == pytest.approx(samples.mean(), rel=1e-3)
    assert ls.max == pytest.approx(samples.max(), rel=1e-3)
    assert LatencyRecorder().to_latency_stats().p99 == 0.0


def test_merge_shadow_stats_adds_counts_from_devices_exactly():
    comps = random_comparisons(120, seed=9)
    parts = [stats_of(comps[:40], [2.0] * 40), stats_of(comps[40:], [4.0] * 80)]
    merged = merge_shadow_stats([p.to_shadow_stats(REF) for p in parts])
    direct = stats_of(comps).to_shadow_stats(REF)
    assert isinstance(merged, ShadowStats)
    assert (merged.frames, merged.disagreements, merged.agreement) == (
        direct.frames, direct.disagreements, pytest.approx(direct.agreement))
    assert merged.confusion == direct.confusion
    assert merged.per_class_disagreements == direct.per_class_disagreements
    assert merged.candidate == REF
    assert merged.latency_ms.mean == pytest.approx((40 * 2.0 + 80 * 4.0) / 120, rel=0.01)
    assert merge_shadow_stats([]).agreement is None


def test_all_labels_used_in_confusion_are_model_labels():
    st = stats_of(random_comparisons(60, seed=4)).to_shadow_stats()
    assert set(st.confusion) <= set(COLOURS)


def test_candidate_nan_outputs_and_errors_count_merge_and_travel_on_the_wire():
    comp = ClassificationComparator()
    good = cls_pred(np.array([0.7, 0.2, 0.1]))
    nan = cls_pred(np.array([np.nan, np.nan, np.nan]))
    a, b = AgreementStats(), AgreementStats()
    a.add(comp.compare(good, good))
    a.add(comp.compare(good, nan), candidate_finite=False)
    a.add_error()
    b.add(comp.compare(good, nan), candidate_finite=False)
    b.add_error(2)
    both = a + b
    assert (both.nan_outputs, both.errors, both.compared) == (2, 3, 3)
    st = both.to_shadow_stats(REF)
    assert (st.nan_outputs, st.errors) == (2, 3)
    merged = merge_shadow_stats([a.to_shadow_stats(REF), b.to_shadow_stats(REF)])
    assert (merged.nan_outputs, merged.errors, merged.frames) == (2, 3, 3)
    t = Telemetry(device_id="dev-1", period_start="2026-01-01T00:00:00Z", period_end="2026-01-01T00:00:10Z", shadow=st)
    back = decode(encode(t), Telemetry)
    assert (back.shadow.nan_outputs, back.shadow.errors) == (2, 3)
    # an older agent's telemetry without the fields still decodes (zero)
    old = encode(t).replace(b',"nan_outputs":2,"errors":3', b"")
    assert b"nan_outputs" not in old.split(b'"shadow"')[1]
    assert decode(old, Telemetry).shadow.errors == 0
