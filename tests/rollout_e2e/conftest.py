"""A real fleet for rollout tests: a broker, the controller (HTTP + MQTT + reconciler) and
20 real ``Agent`` daemons in threads of this process, over three hardware profiles.

The fleet is shared by the tests of a module (starting 10 agents costs seconds); every
test starts from "all devices run ``digits:1.0`` in control" and leaves the fleet there or
on a newer good version. Each agent's control path is tapped (``Pipeline.on_output``) to
record which models *ever produced an output* on it — the ground truth for "the set of
devices that ever ran the candidate".
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud.broker import EmbeddedBroker, MosquittoBroker
from edgefleet.cloud.demo.train import TrainedModel

from .. import conftest as root_conftest
from ..conftest import RunningAgent, Stack, push, start_stack, wait_until
from . import candidates

PROFILES = {"jetson-orin-nano": 4, "jetson-orin-agx": 4, "jetson-xavier-nx": 2}  # 10 agents: waves of 1, 4, 5
FPS = 5.0
BASE = "digits:1.0"


def device_ids() -> list[tuple[str, str]]:
    out = []
    for hw, n in PROFILES.items():
        short = hw.removeprefix("jetson-")
        out += [(f"{short}-{i:02d}", hw) for i in range(n)]
    return out


@dataclass
class Fleet:
    stack: Stack
    broker: Any
    root: Path
    tokens: dict[str, str]
    hardware: dict[str, str]
    agents: dict[str, RunningAgent] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)  # each device's broker password
    ran: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return self.stack.client

    def start_agent(self, device_id: str) -> RunningAgent:
        from edgefleet.edge_agent.config import AgentConfig
        from edgefleet.edge_agent.daemon import Agent

        agent_section: dict[str, Any] = {
            "device_id": device_id, "data_dir": str(self.root / "agents" / device_id),
            "controller_url": self.stack.url, "token": self.tokens[device_id],
            "health_window_s": 1.0, "hardware_id": self.hardware[device_id]}
        write_roots = getattr(root_conftest, "write_roots", None)
        if write_roots is not None:  # devices are provisioned with the controller's trusted roots
            agent_section["trust_roots"] = str(write_roots(self.stack, self.root / "roots"))
        cfg = AgentConfig.model_validate({
            "agent": agent_section,
            "mqtt": {"host": self.broker.host, "port": self.broker.port,
                     "username": device_id, "password": self.passwords.get(device_id),
                     "protocol": "5" if getattr(self.broker, "kind", "") == "mosquitto" else "3.1.1"},
            "source": {"kind": "synthetic-digits", "fps": FPS, "seed": 1},
            "capture": {"enabled": False, "upload": False},
            "output": {"socket": ""},
        })
        agent = Agent(cfg)

        def tap(_ts: float, _frame: Any, _pred: Any, ref: Any, device_id: str = device_id) -> None:
            with self.lock:
                self.ran[device_id].add(ref.digest)

        agent.pipeline.on_output.append(tap)
        ra = RunningAgent(agent).start()
        self.agents[device_id] = ra
        return ra

    def stop_agent(self, device_id: str) -> None:
        self.agents.pop(device_id).stop()

    def ever_ran(self, digest: str) -> set[str]:
        with self.lock:
            return {d for d, digests in self.ran.items() if digest in digests}

    def installed(self, device_id: str, slot: str = "control") -> str | None:
        s = self.agents[device_id].agent.state.slot(slot)
        return s.installed.digest if s.installed else None

    def restart_controller(self) -> None:
        port = int(self.stack.url.rsplit(":", 1)[1])
        token = self.stack.token
        self.stack.stop()
        self.stack = start_stack(self.stack.data_dir, self.broker, token=token, http_port=port)

    def push(self, model: TrainedModel) -> dict[str, Any]:
        return push(self.stack, model)

    def all_on(self, label: str, timeout: float = 180.0, phases: tuple[str, ...] = ("healthy", "idle", "rolled_back"),
               devices: list[str] | None = None) -> None:
        """Every device (or those named) runs ``label`` in control, out of its health window."""
        names = set(devices if devices is not None else self.tokens)

        def done() -> bool:
            rows = [d for d in self.client.list_devices() if d["id"] in names]
            return all(d["slots"]["control"]["installed"] == label and d["slots"]["control"]["phase"] in phases
                       for d in rows) and len(rows) == len(names)
        wait_until(done, timeout=timeout, interval=0.3, message=f"every device on {label}")


def _reset(self: Fleet) -> None:
    """Back to the fixture's starting point: every device on digits:1.0, out of its window."""
    self.client.deploy(BASE, "control", None)
    self.all_on(BASE)


Fleet.reset = _reset  # type: ignore[attr-defined]


def status(fleet: Fleet, rollout_id: str) -> dict[str, Any]:
    return fleet.client.rollout_status(rollout_id)


def wait_state(fleet: Fleet, rollout_id: str, *states: str, timeout: float = 60.0) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> bool:
        nonlocal last
        last = fleet.client.rollout_status(rollout_id, devices=False, events=0)
        return last["state"] in states

    try:
        wait_until(check, timeout=timeout, interval=0.25, message=f"rollout {rollout_id} in {states}")
    except AssertionError:
        full = fleet.client.rollout_status(rollout_id, events=50)
        raise AssertionError(f"rollout {rollout_id} is {full['state']}, not {states}: reason {full['reason']}; "
                             f"waves {[(w['index'], w['counts'], w['gates']) for w in full['waves']]}; "
                             f"events {[e['message'] for e in full['events']]}") from None
    return last


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, digit_models: tuple[TrainedModel, TrainedModel]) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    auth = root / "broker-auth"
    broker: Any = (MosquittoBroker(data_dir=root / "mosquitto", auth_dir=auth) if MosquittoBroker.available()
                   else EmbeddedBroker(auth_dir=auth))
    broker.start()
    stack = start_stack(root / "controller", broker)
    ids = device_ids()
    creds = {d: stack.client.enrol_device(d, hw, {"site": "lab", "profile": hw}) for d, hw in ids}
    f = Fleet(stack, broker, root, {d: c["token"] for d, c in creds.items()}, dict(ids),
              passwords={d: c["mqtt_password"] for d, c in creds.items()})
    try:
        for d, _hw in ids:
            f.start_agent(d)
        wait_until(lambda: all(d["online"] for d in f.client.list_devices()), timeout=60, message="agents online")
        f.push(candidates.retag(digit_models[0], "1.0"))
        f.reset()
        yield f
    finally:
        for ra in list(f.agents.values()):
            ra.stop()
        f.stack.stop()
        broker.stop()
