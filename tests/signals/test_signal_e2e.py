"""Sidecar signals end to end: a real broker, controller and agent on the digits camera; another
process (a stand-in CAN bridge, a real OS process on the agent's real socket) writes steering."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.campaigns.test_campaign_e2e import QUIET, _campaign_events, _deploy_control
from tests.conftest import Stack, wait_until

BRIDGE = r"""
import json, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(signals, t=None):
    body = {"signals": signals}
    if t is not None:
        body["t"] = t
    s.sendto(json.dumps(body).encode() + b"\n", path)
k = 0
while True:
    phase = k % 40  # at 10 Hz: 1 s straight, 2 s of a stale left turn, 1 s of a fresh left turn
    if phase < 10:
        send({"steering_deg": 2.0, "speed_kmh": 12})
    elif phase < 30:  # stamped 3 s ago (a bridge replaying its backlog): older than max_age_s for
        # every frame still to be judged (those of 3 s ago were judged long since), so never used
        send({"steering_deg": -31.0, "speed_kmh": 12}, t=time.time() - 3.0)
    else:
        send({"steering_deg": -25.0, "speed_kmh": 12})
    if k % 7 == 0:  # junk the agent must drop and count, and live through
        s.sendto(b'{"signals": {"steering_deg": NaN}}\nnot json\n{"signals": {"x": "' + b"a" * 5000 + b'"}}\n', path)
    k += 1
    time.sleep(0.1)
"""


def test_a_campaign_over_sidecar_steering_captures_only_fresh_left_turns(
        stack: Stack, agents: Any, digit_models: Any, tmp_path: Path) -> None:
    stack.controller.capture_policy = QUIET
    data = tmp_path / "agents" / "cam-can"
    ra = agents(stack, "cam-can", data_dir=data, metrics_port=0)
    sock = data / "signals.sock"
    wait_until(lambda: sock.exists(), 30, message="signal socket")
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    _deploy_control(stack, digit_models, 1)
    stack.client.start_campaign({"name": "can-left", "when": "context.steering_deg < -20", "quota": 5,
                                 "frames_only": True, "max_per_minute": 600})
    bridge = subprocess.Popen([sys.executable, "-c", BRIDGE, str(sock)])
    try:
        wait_until(lambda: stack.client.campaign("can-left")["state"] == "completed", 90, message="quota met")
        source = ra.agent.signal_source
        assert source is not None and source.received > 0
        assert source.dropped["non_finite"] > 0 and source.dropped["malformed"] > 0 and source.dropped["oversize"] > 0
        frames = ra.agent.pipeline.totals["frames"]
        wait_until(lambda: ra.agent.pipeline.totals["frames"] > frames + 5, 20, message="pipeline still running")
        assert ra.thread.is_alive() and source._thread is not None and source._thread.is_alive()
        text = httpx.get(f"http://127.0.0.1:{ra.agent.metrics_server.port}/metrics", timeout=10).text
        dropped = [line for line in text.splitlines() if line.startswith("edgefleet_agent_signal_dropped_total{")]
        assert dropped and int(float(dropped[0].rsplit(" ", 1)[1])) > 0, text
    finally:
        bridge.kill()
        bridge.wait(5)
    wait_until(lambda: len(_campaign_events(stack, "can-left")) >= 5, 30, message="events stored")
    events = _campaign_events(stack, "can-left")
    # only the fresh left turn: never the straight stretch, never the stale -31
    assert {e.record["context"]["steering_deg"] for e in events} == {-25.0}
    assert all(e.record["context"]["speed_kmh"] == 12 for e in events)
