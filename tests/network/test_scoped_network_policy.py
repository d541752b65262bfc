"""A network policy scoped to a selector (issue 15, item 4): a metered device matched by an
``unmetered`` scope defers its download and installs once its link turns unmetered, while the
fleet-wide policy stays ``any``. Real broker, controller, HTTP and agent; the link kind comes
from the agent's ``link_command`` hook, which the test flips."""

from __future__ import annotations

from typing import Any

from edgefleet.cloud.tables import Device

from ..conftest import Stack, push, slot_of, wait_until
from .conftest import LinkHook


def _blocked(stack: Stack, device_id: str) -> dict[str, Any]:
    with stack.controller.session() as s:
        d = s.get(Device, device_id)
        return dict(((d.reported or {}) if d is not None else {}).get("update_blocked") or {})


def test_a_metered_device_under_a_scoped_unmetered_policy_defers_then_downloads(
        stack: Stack, network_agents: Any, digit_models: Any, link_hook: LinkHook) -> None:
    ra = network_agents(stack, "cam-lte", network={"link_command": link_hook.command, "probe_interval_s": 0.3})
    wait_until(lambda: stack.client.get_device("cam-lte")["online"], message="online")
    res = stack.client.put_policy("lte", {"select": "device:cam-lte", "network": {"download": "unmetered"}})
    assert res["devices_notified"] == 1
    assert stack.client.network_settings()["policy"]["download"] == "any"  # the fleet-wide one is untouched
    wait_until(lambda: ra.agent.state.settings.network_policy.download == "unmetered", timeout=30,
               message="the agent holds the scoped policy, signed")
    assert stack.client.device_policy("cam-lte")["sources"]["network.download"] == "lte"

    push(stack, digit_models[0])
    stack.client.deploy("digits:1.0", "control", ["cam-lte"])
    blocked = wait_until(lambda: _blocked(stack, "cam-lte").get("code") == "E_LINK_METERED" and _blocked(stack, "cam-lte"),
                         timeout=30, message="E_LINK_METERED reported")
    assert "unmetered" in blocked["reason"]
    slot = slot_of(stack, "cam-lte")
    assert slot["installed"] is None and slot["phase"] == "notified" and not slot.get("error_code")

    link_hook.set("unmetered", "wlan0")
    wait_until(lambda: slot_of(stack, "cam-lte")["installed"] == "digits:1.0", timeout=30, message="installed once unmetered")
