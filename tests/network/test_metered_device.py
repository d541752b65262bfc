"""A metered device defers a download under an ``unmetered`` policy, says why, and installs once
its link turns unmetered (issue 15, item 4). Real broker, controller, HTTP and agent; the
link kind comes from the agent's ``link_command`` hook, which the test flips."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.cloud.client import ApiError
from edgefleet.cloud.tables import Device

from ..conftest import Stack, push, slot_of, wait_until
from .conftest import LinkHook


def _reported(stack: Stack, device_id: str) -> dict[str, Any]:
    with stack.controller.session() as s:
        d = s.get(Device, device_id)
        return dict(d.reported or {}) if d is not None else {}


def _telemetry_link(stack: Stack, device_id: str) -> dict[str, Any] | None:
    return (stack.client.get_device(device_id).get("telemetry") or {}).get("link")


def test_metered_device_defers_then_downloads_when_its_link_turns_unmetered(
        stack: Stack, network_agents: Any, digit_models: Any, link_hook: LinkHook) -> None:
    ra = network_agents(stack, "cam-lte", network={"link_command": link_hook.command, "probe_interval_s": 0.3})
    wait_until(lambda: stack.client.get_device("cam-lte")["online"], message="online")
    res = stack.client.set_network_settings({"download": "unmetered", "max_download_bps": 2_000_000})
    assert res["source"] == "operator" and res["policy"]["download"] == "unmetered" and res["devices_notified"] == 1
    wait_until(lambda: ra.agent.state.settings.network_policy.download == "unmetered", timeout=30,
               message="the agent holds the signed policy")
    assert ra.agent.network.download.rate == 2_000_000  # the policy's cap (the config sets none)
    link = wait_until(lambda: _telemetry_link(stack, "cam-lte"), timeout=20, message="link in telemetry")
    assert link == {"kind": "metered", "interface": "wwan0", "source": "command"}

    push(stack, digit_models[0])
    stack.client.deploy("digits:1.0", "control", ["cam-lte"])
    blocked = wait_until(lambda: (_reported(stack, "cam-lte").get("update_blocked") or {}).get("code") == "E_LINK_METERED"
                         and _reported(stack, "cam-lte")["update_blocked"], timeout=30, message="E_LINK_METERED reported")
    assert "unmetered" in blocked["reason"] and "digits:1.0" in blocked["reason"]
    slot = slot_of(stack, "cam-lte")
    assert slot["installed"] is None and slot["phase"] == "notified" and not slot.get("error_code")  # waiting, not failed
    downloads = ra.agent.data_dir / "trust" / "downloads"
    assert not downloads.exists() or not any(downloads.iterdir())  # not one byte fetched

    link_hook.set("unmetered", "wlan0")
    wait_until(lambda: slot_of(stack, "cam-lte")["installed"] == "digits:1.0", timeout=30, message="installed once unmetered")
    wait_until(lambda: not _reported(stack, "cam-lte").get("update_blocked"), timeout=15, message="block cleared")
    wait_until(lambda: (_telemetry_link(stack, "cam-lte") or {}).get("kind") == "unmetered", timeout=15,
               message="unmetered link in telemetry")
    actions = [e["action"] for e in stack.client.audit_entries(action="network.set")]
    assert actions == ["network.set"]


def test_network_policy_api_refuses_bad_policies_and_resets(stack: Stack) -> None:
    assert stack.client.network_settings()["source"] == "default"
    for bad in ({"download": "interfaces"}, {"download": "cheap"}, {"max_upload_bps": 1},
                {"download": "any", "max_dowload_bps": 5000}):
        with pytest.raises(ApiError) as exc:
            stack.client.set_network_settings(bad)
        assert exc.value.status_code == 422
    assert stack.client.network_settings()["source"] == "default"  # nothing changed
    stack.client.set_network_settings({"download": "interfaces", "interfaces": ["eth0"]})
    assert stack.client.network_settings()["policy"]["interfaces"] == ["eth0"]
    assert stack.client.reset_network_settings()["source"] == "default"
