"""A controller backed up mid-rollout, stopped, restored into a fresh data dir, finishes the rollout.

Real components throughout: the broker, two agents in threads, the controller on loopback
HTTP with SQLite; backup and restore run through the ``fleet`` CLI. The agents never restart:
they reconnect to the restored controller (same broker, same URL) and the second wave reaches
them from the restored database, keys and TUF metadata.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app

from ..conftest import push, start_stack, wait_until
from ..rollout_e2e import candidates

pytestmark = pytest.mark.slow
NO_PG = {"DATABASE_URL": "", "EDGEFLEET_DATABASE_URL": "", "EDGEFLEET_STORE_URL": ""}


def _status(stack, rid: str) -> dict:  # type: ignore[no-untyped-def]
    return stack.client.rollout_status(rid, devices=True, events=0)


def test_restored_controller_finishes_a_rollout_started_before_the_backup(
        broker, agents, digit_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = start_stack(tmp_path / "old", broker)
    port, token = int(old.url.rsplit(":", 1)[1]), old.token
    try:
        devs = [agents(old, name, fps=10.0).device_id for name in ("cam-a", "cam-b")]
        push(old, candidates.retag(digit_models[0], "1.0"))
        rid = old.client.start_rollout("digits:1.0", waves="50,100", soak="8s", gates=["failure<=0.5"],
                                       device_timeout="2m")["id"]
        st = wait_until(lambda: (s := _status(old, rid))["state"] == "soaking" and s, timeout=60,
                        message="wave 1 soaking")
        assert st["current_wave"] == 0 and st["on_model"] == 1  # mid-flight: one device on it, one waiting
        out = tmp_path / "backup.tar.gz"
        res = CliRunner(env=NO_PG).invoke(fleet_app, ["cloud", "backup", str(out), "--data-dir", str(old.data_dir),
                                                      "--with-blobs"])
        assert res.exit_code == 0, res.output
        assert "holds secrets" in res.output and (out.stat().st_mode & 0o777) == 0o600
    finally:
        old.stop()  # the old controller is gone for good

    res = CliRunner(env=NO_PG).invoke(fleet_app, ["cloud", "restore", str(out), "--data-dir", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    new = start_stack(tmp_path / "new", broker, token=token, http_port=port)  # the same URL the agents know
    try:
        st = _status(new, rid)
        assert st["state"] in ("soaking", "running") and st["current_wave"] == 0, st  # picked up where it was
        done = wait_until(lambda: (s := _status(new, rid))["state"] in ("completed", "rolled_back", "paused") and s,
                          timeout=90, interval=0.3, message="rollout finished by the restored controller")
        assert done["state"] == "completed", done
        for dev in devs:
            wait_until(lambda d=dev: new.client.get_device(d)["slots"]["control"]["installed"] == "digits:1.0",
                       timeout=30, message=f"{dev} on digits:1.0")
        actions = [e["action"] for e in new.client.request("GET", "/audit", params={"limit": 100})]
        assert "backup.restore" in actions  # (backup.create went into the old log, after its snapshot)
        assert "rollout.start" in actions  # the history came along
    finally:
        new.stop()
