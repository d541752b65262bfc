"""A rollout's own window and network policy: above every scoped policy for its member devices
while it runs, gone when it ends; a bad window starts no rollout. Real controller over HTTP."""

from __future__ import annotations

import pytest

from edgefleet.cloud.client import ApiError

from ..conftest import Stack, push, wait_until

NIGHT = {"days": ["daily"], "start": "02:00", "duration": "1h", "timezone": "Europe/Berlin"}


def test_a_rollouts_policy_applies_to_its_devices_while_it_runs(stack: Stack, digit_models: object) -> None:
    stack.client.enrol_device("r-1", "cpu-x86_64", {"site": "a"})
    stack.client.enrol_device("r-2", "cpu-x86_64", {"site": "a"})
    stack.client.put_policy("site-a", {"select": "tag:site=a", "priority": 1000,
                                       "windows": [{**NIGHT, "start": "04:00"}]})
    push(stack, digit_models[0])  # type: ignore[index]

    with pytest.raises(ApiError) as exc:
        stack.client.start_rollout("digits:1.0", select="device:r-1", waves="100", windows=[{**NIGHT, "timezone": "Nowhere/X"}])
    assert exc.value.status_code == 400 and "windows[0].timezone" in exc.value.detail
    assert stack.client.list_rollouts() == [] and [p["name"] for p in stack.client.policies()["policies"]] == ["site-a"]

    rid = stack.client.start_rollout("digits:1.0", select="device:r-1", waves="100", windows=[NIGHT],
                                     network={"download": "unmetered"})["id"]
    got = wait_until(lambda: (p := stack.client.device_policy("r-1"))["sources"]["windows"] == f"rollout:{rid}" and p,
                     timeout=30, message="the rollout's window applies to its device")
    assert got["windows"][0]["start"] == "02:00" and got["network"]["download"] == "unmetered"
    assert got["sources"]["network.download"] == f"rollout:{rid}"
    other = stack.client.device_policy("r-2")
    assert other["sources"]["windows"] == "site-a" and other["windows"][0]["start"] == "04:00"

    stack.client.rollout_command(rid, "abort", reason="test")
    wait_until(lambda: stack.client.device_policy("r-1")["sources"]["windows"] == "site-a", timeout=30,
               message="the rollout's policy ends with it")
    # the row itself goes on the sync loop's next pass (release_finished), a moment later
    wait_until(lambda: [p["name"] for p in stack.client.policies()["policies"]] == ["site-a"], timeout=30,
               message="the ended rollout's policy row is removed")
