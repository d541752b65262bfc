"""mosquitto stopped for longer than the device timeout during a rollout of a good model.

While the controller cannot hear the fleet (broker unreachable) and for a grace period
after, device silence does not count against the rollout: it is shown *held: controller
cannot hear the fleet* (status and an event), no device is marked timed out, and once the
broker is back the devices install the model and the rollout completes by itself — no
breach, no rollback. Without the hold, the 3 s device timeout passes during the 5 s outage
and ``failure<=0`` rolls the good model back.
"""

from __future__ import annotations

import time

import pytest

from ..conftest import push, slot_of, wait_until
from ..rollout_e2e import candidates
from .conftest import start_controller

pytestmark = pytest.mark.slow

OUTAGE_S = 5.0
DEVICE_TIMEOUT = "3s"


def test_a_broker_outage_longer_than_the_device_timeout_holds_the_rollout_and_it_completes(
        tmp_path, mosquitto, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    stack = start_controller(tmp_path / "controller", mosquitto)
    try:
        devs = [agents(stack, f"cam-bo-{i}", fps=5.0).device_id for i in range(2)]
        push(stack, candidates.retag(digit_models[0], "1.0"))
        stack.client.deploy("digits:1.0", "control", devs)
        for d in devs:
            wait_until(lambda d=d: slot_of(stack, d)["phase"] == "healthy", message=f"{d} runs 1.0")
        push(stack, candidates.retag(digit_models[0], "1.1"))  # the same good graph, a new version

        mosquitto.stop()
        wait_until(lambda: not stack.controller.bridge.connected.is_set(), message="bridge sees the broker gone")
        started = time.monotonic()
        rid = stack.client.start_rollout("digits:1.1", waves="100", soak="1s", gates=["failure<=0"],
                                         device_timeout=DEVICE_TIMEOUT)["id"]
        st = wait_until(lambda: (x := stack.client.rollout_status(rid, events=50))["held"] and x,
                        message="rollout shown held")
        assert "cannot hear the fleet" in st["held"] and "broker unreachable" in st["held"]
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))  # well past the device timeout
        st = stack.client.rollout_status(rid, events=50)
        assert st["state"] in ("running", "soaking"), st["state"]  # held, not breached
        mosquitto.start()
        back = time.monotonic()

        st = wait_until(lambda: (x := stack.client.rollout_status(rid, events=100))["state"]
                        in ("completed", "rolling_back", "rolled_back", "breached") and x,
                        timeout=60, message="rollout finished")
        messages = [e["message"] for e in st["events"]]
        print(f"outage {back - started:.1f}s, completed {time.monotonic() - back:.1f}s after the broker came back")
        assert st["state"] == "completed", messages
        assert st["breach"] is None and not any("timed out" in m for m in messages), messages
        assert any("held: controller cannot hear the fleet" in m for m in messages), messages
        assert any("resumed" in m for m in messages), messages
        assert st["held"] is None
        for d in devs:
            assert slot_of(stack, d)["installed"] == "digits:1.1"
    finally:
        stack.stop()
