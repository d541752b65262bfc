"""Two controller replicas on one real PostgreSQL never act twice.

* With the lease: both replicas run their sync loops; only the lease holder reconciles. The
  holder is stopped mid-rollout; the other takes the lease over and finishes. Every device
  is sent the new model exactly once (one desired-generation bump, one SetDesired applied
  across both replicas).
* Without the lease (as if it had expired under a paused holder): two reconcilers drive the
  same rollout from two threads as fast as they can; the row lock (``SELECT … FOR UPDATE``)
  and the revision check still let every action happen once.

Devices are simulated (``simfleet``: the real MQTT messages, no agent), 30 of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from edgefleet.cloud.api import create_app
from edgefleet.cloud.broker import EmbeddedBroker, MosquittoBroker, free_port
from edgefleet.cloud.cli.cloud_cmd import create_admin_token
from edgefleet.cloud.client import ApiClient
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.rollout.reconciler import LEASE_NAME, PassResult, Reconciler
from edgefleet.cloud.rollout.store import acquire_lease
from edgefleet.cloud.rollout.tables import ControllerLease
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

from ..conftest import wait_until
from . import candidates
from .simfleet import SimFleet, sim_public_key

PROFILES = ("jetson-orin-nano", "jetson-orin-agx", "jetson-xavier-nx")
N = 30

pytestmark = [pytest.mark.postgres, pytest.mark.flaky(reruns=1)]  # two replicas racing on 2 shared cores: one rerun under load


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Any]:
    auth = tmp_path / "broker-auth"
    b: Any = (MosquittoBroker(data_dir=tmp_path / "mosquitto", auth_dir=auth) if MosquittoBroker.available()
              else EmbeddedBroker(auth_dir=auth))
    b.start()
    yield b
    b.stop()


def _replica(data_dir: Path, url: str, broker: Any, name: str) -> Controller:
    settings = load_settings(data_dir, env={}, database_url=url, mqtt_port=broker.port,
                             mqtt_protocol="5" if getattr(broker, "kind", "") == "mosquitto" else "3.1.1",
                             mqtt_client_id=name, telemetry_period_s=1.0, reconcile_interval_s=0.2,
                             broker_auth_dir=broker.auth_dir)
    c = Controller(settings)
    assert c.broker_auth is not None
    c.broker_auth.set_reload(broker.reload)
    c.reconciler.lease_ttl_s = 1.5
    return c


class Replicas:
    def __init__(self, tmp_path: Path, url: str, broker: Any):
        self.a = _replica(tmp_path / "ctl", url, broker, "replica-a")
        self.a.migrate()
        token = create_admin_token(self.a)
        self.b = _replica(tmp_path / "ctl", url, broker, "replica-b")
        self.a.start()
        self.b.start()
        port = free_port()
        self.http = UvicornThread(create_app(self.b), "127.0.0.1", port)
        self.http.start()
        self.client = ApiClient(f"http://127.0.0.1:{port}", token)
        devices = [(f"sim-{i:03d}", PROFILES[i % 3]) for i in range(N)]
        for d, hw in devices:
            self.client.enrol_device(d, hw, {"site": "lab"}, report_public_key=sim_public_key(d))
        self.sim = SimFleet(broker.host, broker.port, devices,
                            protocol="5" if getattr(broker, "kind", "") == "mosquitto" else "3.1.1",
                            connections=3, step_s=0.05, health_s=0.3, count=False,
                            auth=self.a.mqtt_credentials())
        self.sim.start()

    def stop(self) -> None:
        self.sim.stop()
        self.http.stop()
        for c in (self.a, self.b):
            if not c._stop.is_set():
                c.stop()
        self.client.close()

    def generations(self) -> dict[str, int]:
        return {d["id"]: d["desired_generation"] for d in self.client.list_devices()}


@pytest.fixture
def replicas(tmp_path: Path, postgres: str, mqtt_broker: Any, digit_models) -> Iterator[Replicas]:
    r = Replicas(tmp_path, postgres, mqtt_broker)
    try:
        for version in ("1.0", "2.0"):
            m = candidates.retag(digit_models[0], version)
            r.client.push_model(m.path, name="digits", version=version, manifest=m.manifest.model_dump(mode="json", by_alias=True))
        r.client.deploy("digits:1.0", "control", None)
        wait_until(lambda: r.sim.on(r.client.list_models()[0]["digest"]) == N or
                   all(d["slots"]["control"]["installed"] == "digits:1.0" for d in r.client.list_devices()),
                   timeout=30, message="every device on digits:1.0")
        yield r
    finally:
        r.stop()


def _digest(r: Replicas, version: str) -> str:
    return next(m["digest"] for m in r.client.list_models() if m["version"] == version)


def test_lease_holder_stops_mid_rollout_and_the_other_replica_finishes_acting_once(replicas: Replicas) -> None:
    r = replicas
    before = r.generations()
    rid = r.client.start_rollout("digits:2.0", select="all", waves="10,50,100", soak="1s",
                                 gates=["failure<=0.02"], device_timeout="120s", max_concurrent=4)["id"]
    leader = wait_until(lambda: next((c for c in (r.a, r.b) if c.reconciler.totals.set_desired > 0), None),
                        timeout=20, message="a replica acting")
    other = r.b if leader is r.a else r.a
    assert other.reconciler.totals.set_desired == 0  # only the lease holder acts
    wait_until(lambda: r.client.rollout_status(rid, devices=False, events=0)["current_wave"] >= 1,
               timeout=30, message="wave 2 started")
    leader.stop()  # the holder dies mid-rollout; its lease runs out
    wait_until(lambda: r.client.rollout_status(rid, devices=False, events=0)["state"] == "completed",
               timeout=150, message="rollout completed by the other replica")
    assert other.reconciler.totals.set_desired > 0
    assert leader.reconciler.totals.set_desired + other.reconciler.totals.set_desired == N
    after = r.generations()
    assert {d: after[d] - before[d] for d in after} == {d: 1 for d in after}
    wait_until(lambda: r.sim.on(_digest(r, "2.0")) == N, timeout=10, message="every device on 2.0")


def test_two_reconcilers_racing_on_one_rollout_apply_each_action_once(replicas: Replicas) -> None:
    r = replicas
    with r.a.session() as s:  # neither replica's own loop may act: a holder that never lets go
        s.execute(update(ControllerLease).where(col(ControllerLease.name) == LEASE_NAME)
                  .values(holder="test-blocker", expires_at=time.time() + 3600))
        s.commit()
        assert not acquire_lease(s, LEASE_NAME, r.a.reconciler.holder, 1.5, time.time())
    before = r.generations()
    rid = r.client.start_rollout("digits:2.0", select="all", waves="10,50,100", soak="0s",
                                 gates=["failure<=0.02"], device_timeout="120s")["id"]
    racers = [Reconciler(r.a.engine, r.a, holder="racer-a"), Reconciler(r.b.engine, r.b, holder="racer-b")]
    results = [PassResult(), PassResult()]
    done = threading.Event()
    errors: list[BaseException] = []

    def race(i: int) -> None:
        while not done.is_set():
            try:
                racers[i].reconcile(rid, time.time(), results[i])
            except Exception as exc:  # StaleState is expected now and then; anything else is not
                if type(exc).__name__ != "StaleState":
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: r.client.rollout_status(rid, devices=False, events=0)["state"] == "completed",
                   timeout=150, message="rollout completed")
    finally:
        done.set()
        for t in threads:
            t.join(timeout=10)
    assert not errors, errors
    assert results[0].set_desired + results[1].set_desired == N, (results[0], results[1])
    after = r.generations()
    assert {d: after[d] - before[d] for d in after} == {d: 1 for d in after}
