"""The controller's quota arithmetic over a real database: what counts, what does not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.cloud.campaigns import store
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.errors import BadRequest
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import Event, ModelOutput


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    with c.session() as s:
        for d, site in (("cam-a", "north"), ("cam-b", "north"), ("cam-x", "south")):
            fleet.enrol_device(s, d, "cpu-x86_64", {"site": site})
    yield c
    c.engine.dispose()


def _event(device: str, n: int, campaign: str = "north") -> Event:
    return Event(device_id=device, event_id=f"{device}-{n}", trigger="campaign", campaign=campaign,
                 control=ModelOutput(label="3", score=0.9, scores=[0.9, 0.1]))


def test_quota_counts_each_capture_once_caps_devices_and_ignores_strangers(controller: Controller) -> None:
    with controller.session() as s:
        row = store.start(s, None, store.StartRequest(name="north", select="tag:site=north", when="disagree",
                                                      quota=5, per_device=3), by="op")
        gen_before = {d.id: d.desired_generation for d in fleet.list_devices(s)}
        assert [sp.name for sp in store.specs_for(s, fleet.get_device(s, "cam-a"))] == ["north"]
        assert store.specs_for(s, fleet.get_device(s, "cam-x")) == []  # not selected: never told
        for n in range(3):
            assert store.record(s, None, _event("cam-x", n)) is False  # not selected: not counted
        for n in range(6):
            store.record(s, None, _event("cam-a", n))  # a device past its share counts as its share
        store.record(s, None, _event("cam-a", 0))  # the same capture again (MQTT, then upload)
        assert store.progress(s, row).captured == 3 and store.progress(s, row).devices == {"cam-a": 3}
        assert store.record(s, None, _event("cam-b", 0)) is False
        assert store.record(s, None, _event("cam-b", 1)) is True  # 3 + 2: the fleet quota is met
        s.refresh(row)
        assert row.state == "completed" and row.finished_by == "quota of 5 met"
        assert store.specs_for(s, fleet.get_device(s, "cam-a")) == []  # its devices are told to stop
        after = {d.id: d.desired_generation for d in fleet.list_devices(s)}
        assert after["cam-a"] > gen_before["cam-a"] and after["cam-x"] == gen_before["cam-x"]
        assert store.record(s, None, _event("cam-b", 2)) is False  # in flight: stored, no second completion
        p = store.progress(s, row)
        assert p.groups == {"cpu-x86_64": {"devices": 2, "captured": 6}}


def test_until_ends_a_campaign_and_bad_input_is_refused(controller: Controller) -> None:
    with controller.session() as s:
        store.start(s, None, store.StartRequest(name="brief", when="confidence < 0.2", quota=5, until_s=0.2), by="op")
        time.sleep(0.3)
        assert store.specs_for(s, fleet.get_device(s, "cam-a")) == []  # past --until: not sent
        assert store.expire(s, None) == ["brief"]
        assert store.get(s, "brief").state == "ended"
        for req, words in ((store.StartRequest(name="t", when="disagree", threshold=0.1), "--threshold goes with"),
                           (store.StartRequest(name="t", like_event="e1"), "needs --threshold"),
                           (store.StartRequest(name="t", select="hw:", when="disagree"), "--select"),
                           (store.StartRequest(name="t", when="context.x <"), "ends too early")):
            with pytest.raises(BadRequest, match=words):
                store.start(s, None, req, by="op")


def test_like_sends_the_reviewed_captures_output_vector(controller: Controller) -> None:
    from edgefleet.cloud import shadow_index

    with controller.session() as s:
        shadow_index.record_event(s, Event(device_id="cam-a", event_id="ev-7", trigger="disagreement",
                                           control=ModelOutput(label="7", score=0.8, scores=[0.1, 0.8, 0.1])))
        store.start(s, None, store.StartRequest(name="more-7", like_event="ev-7", threshold=0.05, quota=10), by="op")
        (sent,) = store.specs_for(s, fleet.get_device(s, "cam-b"))
        assert sent.like is not None and sent.like.vector == [0.1, 0.8, 0.1] and sent.like.threshold == 0.05
        assert sent.condition is None and sent.like.source_event == "ev-7"
