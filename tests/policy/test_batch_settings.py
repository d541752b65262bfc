"""Settings for a batch of devices are read once and resolved per device in memory
(``Controller.devices_settings``): each device still gets exactly what the per-device
resolution gives it, and nothing is kept across publishes — a policy changed between two
publishes is what the second one signs."""

from __future__ import annotations

from edgefleet.cloud import policy
from edgefleet.cloud.campaigns import store as campaign_store
from edgefleet.cloud.tables import Device
from edgefleet.cloud.trust import director_store

from ..conftest import Stack


def _enrol(stack: Stack) -> None:
    stack.client.enrol_device("nano-1", "jetson-orin-nano", {"site": "a"})
    stack.client.enrol_device("nano-2", "jetson-orin-nano", {"site": "b"})
    stack.client.enrol_device("x86-1", "cpu-x86_64", {"site": "a"})


def _devices(stack: Stack) -> list[Device]:
    with stack.controller.session() as s:
        return list(s.query(Device).order_by(Device.id).all())  # type: ignore[attr-defined]


def test_batch_resolution_gives_each_device_what_per_device_resolution_gives_it(stack: Stack) -> None:
    _enrol(stack)
    stack.client.put_policy("orin", {"select": "hw:jetson-orin", "capture": {"sample_rate": 0.2}})
    stack.client.put_policy("site-a", {"select": "tag:site=a", "capture": {"sample_rate": 0.7},
                                       "network": {"download": "unmetered"}, "priority": 5})
    c = stack.controller
    with c.session() as s:
        devices = list(s.query(Device).order_by(Device.id).all())  # type: ignore[attr-defined]
        batch = c.devices_settings(s, devices)
        for d in devices:
            got = policy.resolve_for(s, d, c.capture_policy)
            assert batch[d.id].capture == got.capture and batch[d.id].network_policy == got.network
            assert batch[d.id].maintenance == got.maintenance
            assert batch[d.id].campaigns == campaign_store.specs_for(s, d)
    rates = {d: batch[d].capture.sample_rate for d in batch}
    assert rates == {"nano-1": 0.7, "nano-2": 0.2, "x86-1": 0.7}  # each device only its own
    assert batch["nano-2"].network_policy.download != "unmetered"


def test_a_policy_changed_between_two_publishes_is_what_the_second_one_signs(stack: Stack) -> None:
    _enrol(stack)
    c = stack.controller
    stack.client.put_policy("orin", {"select": "hw:jetson-orin", "capture": {"sample_rate": 0.2}})
    with c.session() as s:
        assert c.publish_devices(s, _devices(stack)) == 3
        signed = director_store.heads(s, ["nano-1", "x86-1"])
    assert signed["nano-1"].binding["settings"]["capture"]["sample_rate"] == 0.2
    x86_version = signed["x86-1"].targets_version

    stack.client.put_policy("orin", {"select": "hw:jetson-orin", "capture": {"sample_rate": 0.9}})
    with c.session() as s:
        assert c.publish_devices(s, _devices(stack)) == 3
        signed = director_store.heads(s, ["nano-1", "nano-2", "x86-1"])
    assert signed["nano-1"].binding["settings"]["capture"]["sample_rate"] == 0.9
    assert signed["nano-2"].binding["settings"]["capture"]["sample_rate"] == 0.9
    # the device the policy does not select kept its signature: same settings, not signed again
    assert signed["x86-1"].targets_version == x86_version
    assert signed["x86-1"].binding["settings"]["capture"]["sample_rate"] != 0.9
