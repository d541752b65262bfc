"""Benchmark: from a gate breach to every wave-1 device back on its last known good model.

A real fleet: a local broker, the controller (uvicorn, SQLite, reconciler every 0.5 s) and
20 real agents (``edgefleet.edge_agent.daemon.Agent``, ONNX Runtime, synthetic camera at
5 fps) in threads of this process, over three hardware profiles, telemetry every 0.5 s.
Everyone runs digits:1.0; a rollout sends a candidate that emits NaN once it runs
(``tests/rollout_e2e/candidates.py``) with gates failure<=0.02, nan_rate<=0 and
--on-breach rollback.

Measured (times as the controller records them, polled every 50 ms through the API):

* rollback: gate breach → the last wave-1 device reports digits:1.0 installed again,
  in seconds and in telemetry periods;
* baseline, same run: the forward switch — the rollout's start → the last wave-1 device
  reports the candidate installed (dispatch, download, verify, self-test, activate).

Prints both and the ratio rollback ÷ forward. ``--rounds`` repeats with fresh candidates.

    python bench/bench_rollback.py [--agents 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_stack import LocalStack, local_stack  # noqa: E402

PROFILES = ("jetson-orin-nano", "jetson-orin-agx", "jetson-xavier-nx")
PERIOD_S = 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-rollback-"))
    with local_stack(tmp, telemetry_period_s=PERIOD_S, reconcile_interval_s=0.5) as stack:
        run(args, tmp, stack)


def run(args: argparse.Namespace, tmp: Path, stack: LocalStack) -> None:
    from tests.rollout_e2e.candidates import nan_after_activation, retag

    from edgefleet.cloud.demo.train import train_digit_models
    from edgefleet.edge_agent.config import AgentConfig
    from edgefleet.edge_agent.daemon import Agent

    broker, protocol, settings, controller, client = stack.broker, stack.protocol, stack.settings, stack.controller, stack.client
    roots = tmp / "roots"
    roots.mkdir()
    trust = getattr(controller, "trust", None)
    if trust is not None:
        r = trust.roots()
        (roots / "director-root.json").write_bytes(r.director)
        (roots / "image-root.json").write_bytes(r.image)
    agents: list[tuple[Agent, threading.Thread]] = []
    models = train_digit_models(tmp / "models")
    try:
        for i in range(args.agents):
            device_id, hw = f"cam-{i:02d}", PROFILES[i % len(PROFILES)]
            tok = client.enrol_device(device_id, hw, {"site": "bench"})["token"]
            agent_cfg: dict[str, Any] = {"device_id": device_id, "data_dir": str(tmp / "agents" / device_id),
                                         "controller_url": settings.base_url, "token": tok, "health_window_s": 1.0,
                                         "hardware_id": hw}
            if trust is not None:
                agent_cfg["trust_roots"] = str(roots)
            agent = Agent(AgentConfig.model_validate({
                "agent": agent_cfg, "mqtt": {"host": broker.host, "port": broker.port, "protocol": protocol},
                "source": {"kind": "synthetic-digits", "fps": 5.0, "seed": 1},
                "capture": {"enabled": False, "upload": False}, "output": {"socket": ""}}))
            t = threading.Thread(target=agent.run, daemon=True)
            t.start()
            agents.append((agent, t))
        base = retag(models[0], "1.0")
        client.push_model(base.path, name="digits", version="1.0", manifest=base.manifest.model_dump(mode="json", by_alias=True))
        client.deploy("digits:1.0", "control", None)

        def all_healthy() -> bool:
            return all(d["slots"]["control"]["installed"] == "digits:1.0" and d["slots"]["control"]["phase"] in ("healthy", "idle", "rolled_back")
                       for d in client.list_devices())

        _wait(all_healthy, 90, "every device healthy on digits:1.0")
        back, forward = [], []
        for rnd in range(args.rounds):
            bad = nan_after_activation(models[0], tmp / "models", f"1.1-nan{rnd}")
            client.push_model(bad.path, name="digits", version=bad.manifest.version,
                              manifest=bad.manifest.model_dump(mode="json", by_alias=True))
            rid = client.start_rollout(f"digits:{bad.manifest.version}", waves="10,50,100", soak="2s",
                                       gates=["failure<=0.02", "nan_rate<=0"], device_timeout="60s")["id"]
            wave0: set[str] = set()
            reached: dict[str, float] = {}
            lkg_at: dict[str, float] = {}
            deadline = time.time() + 90
            st: dict[str, Any] = {}
            while time.time() < deadline:
                st = client.rollout_status(rid, events=0)
                now = time.time()
                wave0 = {m["device"] for m in st["members"] if m["wave"] == 0}
                for m in st["members"]:
                    if m["wave"] != 0:
                        continue
                    if m["installed"] == f"digits:{bad.manifest.version}":
                        reached.setdefault(m["device"], now)
                    elif m["device"] in reached and m["installed"] == "digits:1.0":
                        lkg_at.setdefault(m["device"], now)
                if st["state"] == "rolled_back" and wave0 and set(lkg_at) >= (wave0 & set(reached)):
                    break
                time.sleep(0.05)
            if st.get("breach") is None or not reached:
                raise SystemExit(f"round {rnd}: no breach or the candidate never ran ({st.get('state')}: {st.get('reason')})")
            breach_at, started_at = st["breach"]["at"], st["started_at"]
            last_lkg = max(lkg_at.get(d, breach_at) for d in wave0 & set(reached))
            back.append(max(0.0, last_lkg - breach_at))
            forward.append(max(reached.values()) - started_at)
            print(f"round {rnd}: breach → wave-1 on LKG {back[-1]:.2f} s ({back[-1] / PERIOD_S:.1f} telemetry periods); "
                  f"forward switch {forward[-1]:.2f} s; {len(wave0)} devices in wave 1, "
                  f"{len(reached)} ran the candidate", flush=True)
            _wait(all_healthy, 60, "every device back on digits:1.0")
        b, f = statistics.median(back), statistics.median(forward)
        print(f"median over {args.rounds} rounds: breach → every wave-1 device on its last known good model "
              f"{b:.2f} s = {b / PERIOD_S:.1f} telemetry periods ({PERIOD_S:g} s); forward switch {f:.2f} s; "
              f"ratio rollback/forward {b / f:.2f}x")
    finally:
        for agent, _t in agents:
            agent.stop()
        for _agent, t in agents:
            t.join(timeout=15)


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
