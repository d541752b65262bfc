"""PostgreSQL stopped and started while devices report: nothing acknowledged is lost.

Three devices publish signed QoS 1 ``reported`` messages before, during and after a
database outage. During it the bridge acknowledges nothing it could not store (it retries
the same message with backoff), the API answers 503 ``E_DATABASE_UNAVAILABLE`` with
Retry-After instead of a bare 500, readiness is 503 naming the database while liveness
stays 200, and the rollouts are shown held. After it, every report sent is applied exactly
once (each signed seq applied once: ``ok`` equals the number sent, the stored seq is the
last one sent) and readiness is 200 again.
"""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from ..conftest import wait_until
from .conftest import Reporter, start_controller

pytestmark = pytest.mark.slow


def _ok(stack) -> int:  # type: ignore[no-untyped-def]
    return stack.controller.bridge.counters[("reported", "ok")]


def test_reports_sent_during_a_database_outage_are_all_applied_after_it(
        tmp_path, mosquitto, pg, caplog) -> None:  # type: ignore[no-untyped-def]
    stack = start_controller(tmp_path / "controller", mosquitto, database_url=pg.url)
    reporters = [Reporter(stack, f"cam-db-{i}") for i in range(3)]
    try:
        for _ in range(5):
            for r in reporters:
                r.publish()
        wait_until(lambda: _ok(stack) == 15, message="reports before the outage applied")
        ready = httpx.get(f"{stack.url}/api/v1/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"]["latency_ms"] is not None
        metrics = httpx.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {stack.token}"}).text
        assert 'edgefleet_database{figure="up"} 1.0' in metrics
        assert 'edgefleet_ingest{figure="consuming"} 1.0' in metrics and 'figure="hears_fleet"} 1.0' in metrics

        caplog.set_level(logging.WARNING)
        pg.stop()
        sent_during = 0
        for _ in range(10):
            for r in reporters:
                r.publish()
                sent_during += 1
        # the bridge notices, keeps the message unacknowledged and backs off
        wait_until(lambda: stack.controller.bridge.db_unavailable_since is not None, timeout=15,
                   message="bridge sees the database down")
        assert _ok(stack) == 15  # nothing applied, so nothing acknowledged
        res = httpx.get(f"{stack.url}/api/v1/devices", headers={"Authorization": f"Bearer {stack.token}"})
        assert res.status_code == 503, res.text
        assert res.json()["code"] == "E_DATABASE_UNAVAILABLE" and int(res.headers["Retry-After"]) > 0
        ready = httpx.get(f"{stack.url}/api/v1/health/ready")
        assert ready.status_code == 503 and "database" in ready.json()["failing"]
        assert ready.json()["checks"]["ingest"]["ok"] is False  # ingest does not move either
        assert httpx.get(f"{stack.url}/api/v1/health/live").status_code == 200
        wait_until(lambda: not stack.controller.ingest_watch.healthy, message="controller knows it cannot hear")
        time.sleep(3)  # several backoff rounds: still nothing acknowledged-and-dropped
        assert _ok(stack) == 15
        assert stack.controller.bridge.counters[("reported", "error")] == 0
        retries = stack.controller.bridge.counters[("reported", "db_unavailable")]
        assert 1 <= retries <= 10, retries  # backoff, no spin

        pg.start()
        for r in reporters:  # and some after
            r.publish()
        total = sum(len(r.sent) for r in reporters)
        wait_until(lambda: _ok(stack) == total, timeout=30, message="every report applied after the outage")
        assert stack.controller.bridge.counters[("reported", "replayed")] == 0
        for r in reporters:
            d = stack.client.get_device(r.device_id)
            assert d["reported_generation"] == len(r.sent)
        with stack.controller.session() as s:
            from edgefleet.cloud.tables import Device

            assert {d.id: d.report_seq for d in s.query(Device).all()} == {r.device_id: r.sent[-1] for r in reporters}
        wait_until(lambda: httpx.get(f"{stack.url}/api/v1/health/ready").status_code == 200, timeout=15,
                   message="ready again")
        # the outage was logged, not flooded: a handful of lines for 30 held messages and many retries
        outage_lines = [r for r in caplog.records if "database" in r.getMessage().lower()]
        assert 1 <= len(outage_lines) <= 12, [r.getMessage() for r in outage_lines]
        assert sent_during == 30
    finally:
        for r in reporters:
            r.close()
        stack.stop()
