"""A real agent outside its maintenance window downloads and verifies at once but switches
only when its window opens — on a simulated clock, also after being offline (stopped) across
a window that opened and closed meanwhile; the rollout's gate does not breach and the
device's timeout does not run while it waits. Real broker, controller, HTTP, TUF and agent.

Slow (about a minute on a busy 2-core runner): one controller, one agent started twice (the
restart is the "offline across the window" case) and a rollout that waits past its device
timeout; kept as one test so the stack starts once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app
from edgefleet.cloud.tables import Device
from edgefleet.edge_agent.maintenance import WindowGate

from ..conftest import RunningAgent, Stack, push, slot_of, wait_until, write_roots

UTC = timezone.utc
NIGHT = {"days": ["daily"], "start": "01:00", "duration": "1h", "timezone": "UTC"}
# The agent's clock is simulated, the controller's is real: it counts a waiting device's timeout
# from when the window opens on its own clock, so every simulated time here lies in the future
# (a week from today), never on a fixed date that real time overtakes.
DAY0 = (datetime.now(timezone.utc) + timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)


def _at(days: int, hour: int, minute: int = 0) -> datetime:
    return DAY0 + timedelta(days=days, hours=hour, minutes=minute)


class SimClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def window_agent(tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    """Factory: a real agent whose maintenance windows read ``clock`` (set before it runs)."""
    from edgefleet.edge_agent.config import AgentConfig
    from edgefleet.edge_agent.daemon import Agent

    running: list[RunningAgent] = []
    creds: dict[str, dict[str, Any]] = {}

    def make(stack: Stack, device_id: str, clock: SimClock) -> RunningAgent:
        if device_id not in creds:
            creds[device_id] = stack.client.enrol_device(device_id, "cpu-x86_64", {"site": "night"})
        c = creds[device_id]
        cfg = AgentConfig.model_validate({
            "agent": {"device_id": device_id, "data_dir": str(tmp_path / "agents" / device_id),
                      "controller_url": stack.url, "token": c["token"], "health_window_s": 1.0,
                      "trust_roots": str(write_roots(stack, tmp_path / "roots"))},
            "mqtt": {"host": stack.broker.host, "port": stack.broker.port, "username": device_id,
                     "password": c["mqtt_password"], "protocol": "3.1.1"},
            "source": {"kind": "synthetic-digits", "fps": 30.0, "seed": 1},
        })
        agent = Agent(cfg)
        agent.updater.windows = WindowGate(clock=clock, zone=UTC)
        ra = RunningAgent(agent).start()
        running.append(ra)
        return ra

    yield make
    for ra in running:
        ra.stop()


def _reported_slot(stack: Stack, device_id: str) -> dict[str, Any]:
    with stack.controller.session() as s:
        d = s.get(Device, device_id)
        return dict(((d.reported or {}).get("slots") or {}).get("control") or {}) if d is not None else {}


def test_outside_its_window_a_device_downloads_but_switches_only_when_the_window_opens(
        stack: Stack, window_agent: Any, digit_models: Any) -> None:
    clock = SimClock(_at(0, 12))  # noon: outside
    ra = window_agent(stack, "cam-night", clock)
    wait_until(lambda: stack.client.get_device("cam-night")["online"], message="online")
    res = stack.client.put_policy("night", {"select": "tag:site=night", "windows": [NIGHT]})
    assert res["devices_notified"] == 1
    wait_until(lambda: ra.agent.state.settings.maintenance.windows, timeout=30, message="the agent holds the signed windows")

    push(stack, digit_models[0])
    rid = stack.client.start_rollout("digits:1.0", select="device:cam-night", waves="100", soak="1s",
                                     gates=["failure<=0"], device_timeout="3s")["id"]
    rep = wait_until(lambda: _reported_slot(stack, "cam-night").get("phase") == "awaiting_window"
                     and _reported_slot(stack, "cam-night"), timeout=60, message="awaiting_window reported")
    assert rep["installed"] is None and not rep.get("error_code")
    assert datetime.fromisoformat(rep["window_opens_at"]) == _at(1, 1)
    target = rep["target"]["digest"]
    assert (ra.agent.data_dir / "bundles" / target).is_dir()  # downloaded and verified already
    slot = slot_of(stack, "cam-night")
    assert slot["phase"] == "awaiting_window" and slot["installed"] is None
    assert datetime.fromisoformat(slot["window_opens_at"].replace("Z", "+00:00")) == _at(1, 1)
    shown = CliRunner().invoke(app, ["device", "ls", "--url", stack.url, "--token", stack.token])
    assert "awaiting_window" in shown.output and f"window opens {_at(1, 1):%Y-%m-%d %H:%M}Z" in shown.output, shown.output
    time.sleep(5)  # past the 3 s device timeout, several reconcile passes: waiting is neither failed nor timed out
    st = stack.client.rollout_status(rid)
    assert st["state"] == "running" and not st.get("breach"), st.get("reason")
    assert [m["status"] for m in st["members"]] == ["awaiting_window"]

    # offline across the window: stopped before it opens, back after it closed → still waits
    ra.stop()
    clock.now = _at(1, 2, 30)
    ra = window_agent(stack, "cam-night", clock)
    wait_until(lambda: stack.client.get_device("cam-night")["online"], message="back online")
    wait_until(lambda: datetime.fromisoformat(_reported_slot(stack, "cam-night").get("window_opens_at") or
                                              "2000-01-01T00:00:00+00:00") == _at(2, 1),
               timeout=60, message="the next window reported after coming back")
    assert ra.agent.state.slot("control").installed is None

    clock.now = _at(2, 1, 5)  # inside the next window
    wait_until(lambda: slot_of(stack, "cam-night")["installed"] == "digits:1.0", timeout=60, message="switched in the window")
    assert _reported_slot(stack, "cam-night").get("window_opens_at") is None
    wait_until(lambda: stack.client.rollout_status(rid, devices=False)["state"] == "completed", timeout=60,
               message="the rollout completed once its device switched")
