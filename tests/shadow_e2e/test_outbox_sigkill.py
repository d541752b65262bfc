"""SIGKILL an agent process while its link to the controller is down: no captured event is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgefleet.cloud.demo.orchestrator import UvicornThread, to_toml
from tests.conftest import Stack, wait_until, write_roots

from .conftest import TEST_POLICY, deploy_pair, events


def _outbox_event_ids(outbox: Path) -> set[str]:
    db = outbox / "outbox.sqlite3"
    if not db.exists():
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {r[0] for r in con.execute("SELECT event_id FROM items WHERE clip_file IS NOT NULL")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


def _start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgefleet.edge_agent.cli", "run", "--config", str(config)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115


def test_outbox_keeps_every_capture_across_sigkill_and_uploads_it_after_restart(
    stack: Stack, digit_models: Any, tmp_path: Path
) -> None:
    stack.controller.capture_policy = TEST_POLICY
    creds = stack.client.enrol_device("cam-k")
    token = creds["token"]
    data_dir = tmp_path / "agents" / "cam-k"
    config = tmp_path / "cam-k.toml"
    config.write_text(to_toml({
        "agent": {"device_id": "cam-k", "data_dir": str(data_dir), "controller_url": stack.url, "token": token,
                  "health_window_s": 1.0, "trust_roots": str(write_roots(stack, tmp_path / "roots"))},
        "mqtt": {"host": stack.broker.host, "port": stack.broker.port, "username": "cam-k",
                 "password": creds["mqtt_password"]},
        "source": {"kind": "synthetic-digits", "fps": 30, "seed": 3},
        "capture": {"cooldown_s": 0.3, "upload_poll_s": 0.3, "backoff_max_s": 0.5},
        "output": {"socket": ""},
    }))
    log = tmp_path / "agent.log"
    proc = _start_agent(config, log)
    try:
        deploy_pair(stack, digit_models, timeout=90)
        app = stack.http.server.config.app
        host, port = stack.http.server.config.host, stack.http.server.config.port
        stack.http.stop()  # the link to the controller's HTTP is down; MQTT still works

        outbox = data_dir / "outbox"
        wait_until(lambda: len(_outbox_event_ids(outbox)) >= 3, 60, message="captures waiting in the outbox")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        waiting = _outbox_event_ids(outbox)
        assert len(waiting) >= 3

        stack.http = UvicornThread(app, host, port)
        stack.http.start()
        proc = _start_agent(config, log)

        def uploaded() -> bool:
            done = {e.event_id for e in events(stack) if e.clip_id is not None and e.via_upload}
            return waiting <= done

        wait_until(uploaded, 60, message="every event of the killed agent's outbox stored with its clip")
        # the agent drops an item from its outbox after the controller has answered the upload,
        # so the last one may still be there for a moment after the controller stored it
        wait_until(lambda: not _outbox_event_ids(outbox) & waiting, 30,
                   message="the uploaded items removed from the outbox")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
