"""The agent's own Prometheus counters, served by the running daemon on a local port."""

from __future__ import annotations

import httpx

from ..conftest import push, wait_until


def _scrape(agent) -> str:
    server = getattr(agent.agent, "metrics_server", None)
    if server is None:
        return ""
    return httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_running_agent_counts_frames_and_reports_slot_phases(stack, agents, digit_models) -> None:
    control, _ = digit_models
    a = agents(stack, "cam-m", metrics_port=0)
    push(stack, control)
    stack.client.deploy("digits:1.0", "control", ["cam-m"])
    first = wait_until(lambda: _value(_scrape(a), "edgefleet_agent_frames_total") > 0 and _scrape(a), message="frames counted")
    wait_until(lambda: _value(_scrape(a), "edgefleet_agent_frames_total") > _value(first, "edgefleet_agent_frames_total"), message="counter grows")
    text = _scrape(a)
    assert 'edgefleet_agent_slot_phase{' in text and 'slot="control"' in text
