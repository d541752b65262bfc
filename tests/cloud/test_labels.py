"""Class names from devices: only labels of the referenced model's manifest are kept.

Pure ``LabelBook`` tests with a table lookup, plus the controller's ingest path
(``Controller._on_telemetry`` / ``_on_event`` / ``bridge.handle``, telemetry signed by the
device's report key) on a real SQLite database, asserting what is stored.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from edgefleet.cloud import catalog
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.devices.labels import LabelBook, plain_label
from edgefleet.cloud.devices.telemetry_store import TelemetryPeriod
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.shadow_index import ShadowEvent, ShadowPairStats
from edgefleet.protocols import Event, ModelOutput, ModelRef, ShadowStats, Telemetry
from edgefleet.shadow import NONE_LABEL

from ..signed_reports.keys import SignedFeed

CONTROL = ModelRef(name="digits", version="1.0", digest="a" * 64)
CANDIDATE = ModelRef(name="digits", version="2.0", digest="b" * 64)
BARE = ModelRef(name="detector", version="1", digest="c" * 64)  # manifest without labels
STRANGER = ModelRef(name="ghost", version="1", digest="d" * 64)  # not in the catalog
XSS = "</script><script>window.__pwned=1</script>"
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def table_book(calls: list[str] | None = None, clock=None, table=None) -> LabelBook:  # type: ignore[no-untyped-def]
    if table is None:
        table = {CONTROL.digest: ["0", "1", "8"], CANDIDATE.digest: ["0", "1", "8", "9"], BARE.digest: []}

    def lookup(digest: str) -> list[str] | None:
        if calls is not None:
            calls.append(digest)
        return table.get(digest)

    return LabelBook(lookup, **({"clock": clock} if clock else {}))


def telemetry(**kw) -> Telemetry:  # type: ignore[no-untyped-def]
    base = dict(device_id="cam-1", period_start=T0, period_end=T0 + timedelta(seconds=10), control=CONTROL, frames=10)
    return Telemetry(**{**base, **kw})


@pytest.mark.parametrize(("label", "plain"), [
    ("cat", True), ("class_7", True), ("a.b:c-d", True), ("x" * 64, True),
    ("x" * 65, False), ("", False), ("two words", False), (XSS, False), ('"><img src=x>', False),
    ("javascript:alert(1)", False), ("é", False), ("a\nb", False),
])
def test_plain_labels_are_short_names_of_safe_characters(label: str, plain: bool) -> None:
    assert plain_label(label) is plain


def test_manifest_labels_decide_and_plain_names_apply_only_without_them() -> None:
    book = table_book()
    assert book.allows("8", CONTROL) and not book.allows("9", CONTROL)
    assert not book.allows("cat", CONTROL)  # plain, but not a label of this model
    assert book.allows("cat", BARE) and not book.allows(XSS, BARE)
    assert book.allows("cat", STRANGER) and not book.allows(XSS, STRANGER)
    assert book.allows("cat", None) and not book.allows(XSS, None)
    assert book.allows("9", CONTROL, CANDIDATE)  # either model's label
    assert book.allows(NONE_LABEL, CONTROL)  # the comparator's "no box" marker


def test_manifests_are_cached_by_digest_and_unknown_digests_are_asked_again_once_the_miss_expires() -> None:
    calls: list[str] = []
    now = [100.0]
    table = {CONTROL.digest: ["0", "1", "8"]}
    book = table_book(calls, clock=lambda: now[0], table=table)
    for _ in range(3):
        book.allows("8", CONTROL)
        book.allows("x", STRANGER)
    assert calls.count(CONTROL.digest) == 1
    assert calls.count(STRANGER.digest) == 1  # a fleet reporting an unknown model: one read, not one per message
    table[STRANGER.digest] = ["ghost"]  # pushed later
    now[0] += 4.0
    assert book.allows("x", STRANGER) and calls.count(STRANGER.digest) == 1  # still taken as missing
    now[0] += 2.0
    assert not book.allows("x", STRANGER) and book.allows("ghost", STRANGER)  # its manifest decides now
    assert calls.count(STRANGER.digest) == 2


def test_unknown_labels_are_dropped_from_every_telemetry_breakdown_and_the_rest_kept() -> None:
    msg = telemetry(class_counts={"0": 4, "8": 5, XSS: 1},
                    shadow=ShadowStats(candidate=CANDIDATE, frames=10, disagreements=3,
                                       per_class_disagreements={"8": 2, "9": 1, XSS: 1},
                                       confusion={"8": {"8": 3, "9": 2, XSS: 1}, XSS: {"0": 1}, "0": {"0": 4}}))
    out, dropped = table_book().filter_telemetry(msg)
    assert out.class_counts == {"0": 4, "8": 5}
    assert out.shadow is not None
    assert out.shadow.per_class_disagreements == {"8": 2, "9": 1}  # 9: the candidate's label
    assert out.shadow.confusion == {"8": {"8": 3, "9": 2}, "0": {"0": 4}}
    assert sorted(dropped) == sorted([XSS] * 4)
    assert (out.frames, out.shadow.frames, out.shadow.disagreements) == (10, 10, 3)
    assert msg.class_counts[XSS] == 1  # the input is not changed


def test_clean_telemetry_passes_unchanged() -> None:
    msg = telemetry(class_counts={"0": 4, "8": 5})
    out, dropped = table_book().filter_telemetry(msg)
    assert out is msg and dropped == []


def test_event_labels_not_in_their_models_manifest_become_none() -> None:
    ev = Event(device_id="cam-1", event_id="e1", trigger="disagreement",
               control=ModelOutput(model=CONTROL, label=XSS, score=0.9),
               candidate=ModelOutput(model=CANDIDATE, label="9", score=0.6))
    out, dropped = table_book().filter_event(ev)
    assert out.control.label is None and out.control.score == 0.9
    assert out.candidate is not None and out.candidate.label == "9"
    assert dropped == [XSS]
    ev2 = ev.model_copy(update={"candidate": ModelOutput(model=CONTROL, label="9")})  # 9 is not the control's
    out2, dropped2 = table_book().filter_event(ev2)
    assert out2.control.label is None and out2.candidate is not None and out2.candidate.label is None
    assert len(dropped2) == 2


@pytest.fixture
def controller(tmp_path, digit_models):  # type: ignore[no-untyped-def]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    control, candidate = digit_models
    with c.session() as s:
        refs = []
        for m in (control, candidate):
            mv, _ = catalog.push_model(s, c.store, m.path.read_bytes(), name=m.manifest.name,
                                       version=m.manifest.version,
                                       manifest=m.manifest.model_dump(mode="json", by_alias=True))
            refs.append(ModelRef(name=mv.name, version=mv.version, digest=mv.digest))
        fleet.enrol_device(s, "cam-1", "cpu-x86_64", {})
    c.refs = refs  # type: ignore[attr-defined]
    yield c
    c.engine.dispose()


def test_ingest_stores_only_manifest_labels_and_counts_and_logs_the_rest(controller, caplog) -> None:  # type: ignore[no-untyped-def]
    control, candidate = controller.refs
    msg = telemetry(control=control, class_counts={"3": 6, XSS: 4},
                    shadow=ShadowStats(candidate=candidate, frames=10, disagreements=1,
                                       per_class_disagreements={XSS: 1}, confusion={"3": {"3": 5, XSS: 1}}))
    with caplog.at_level(logging.WARNING, logger="edgefleet.cloud.devices.labels"):
        SignedFeed(controller).telemetry(msg)  # signed by the device's report key, as the agent does
        controller._on_event(Event(device_id="cam-1", event_id="e1", trigger="disagreement",
                                   control=ModelOutput(model=control, label="3", score=0.9),
                                   candidate=ModelOutput(model=candidate, label=XSS, score=0.5)))
    with controller.session() as s:
        period = s.exec(select(TelemetryPeriod)).one()
        pair = s.exec(select(ShadowPairStats)).one()
        event = s.exec(select(ShadowEvent)).one()
    assert period.class_counts == {"3": 6}
    assert pair.stats["per_class_disagreements"] == {} and pair.stats["confusion"] == {"3": {"3": 5}}
    assert (event.control_label, event.candidate_label) == ("3", None)
    assert XSS not in json.dumps(event.record)
    assert controller.labels.dropped["cam-1"] == 4  # class_counts, per_class, confusion, event
    assert any("cam-1" in r.getMessage() for r in caplog.records)


def test_a_forged_telemetry_message_through_the_bridge_is_stored_without_its_bad_labels(controller) -> None:  # type: ignore[no-untyped-def]
    from edgefleet.cloud.bridge import MqttBridge
    from edgefleet.protocols import Channel

    control, _ = controller.refs
    bridge = MqttBridge("127.0.0.1", 1, client_id="t", handlers={Channel.TELEMETRY: controller._on_telemetry})
    payload = telemetry(control=control, class_counts={"1": 2, '"><img src=x onerror="window.__pwned=1">': 3})
    outcome = bridge.handle("fleet/v1/devices/cam-1/telemetry", SignedFeed(controller).key("cam-1").sign(payload))
    assert outcome == "ok"
    with controller.session() as s:
        assert s.exec(select(TelemetryPeriod)).one().class_counts == {"1": 2}
