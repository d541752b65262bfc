"""Re-publishing desired state after a broker connection: only what the broker may have lost,
paced, and never in ingest's way (issue 14).

* a new session (here amqtt, which keeps nothing across a restart) re-publishes every device,
  at most ``rate`` a second over the run (counted at a real subscriber), while a device's
  status message is still applied;
* a persistent mosquitto restarted with its store resumes the controller's MQTT 5 session:
  nothing is re-published, and the retained desired state is still there for a newcomer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud.broker import MosquittoBroker
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.errors import ConfigError
from edgefleet.cloud.republish import CATCH_UP_S, pace_delay, rebase
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.tables import Device
from edgefleet.protocols import Status
from edgefleet.protocols.messages import encode

from ..conftest import Stack, device_credentials, mqtt_client, start_stack, wait_until

N = 80
RATE = 40.0


class Desired:
    """A subscriber (the controller's account) noting each retained desired hint as it arrives."""

    def __init__(self, stack: Stack, client_id: str):
        self.arrivals: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.client = mqtt_client(stack.broker, *stack.controller.mqtt_credentials(), client_id=client_id)
        self.client.on_message = self._on
        self.client.subscribe("fleet/v1/devices/+/desired", qos=1)

    def _on(self, _c: Any, _u: Any, m: Any) -> None:
        if m.payload:
            with self._lock:
                self.arrivals.append((time.monotonic(), m.topic.split("/")[3]))

    def devices(self) -> set[str]:
        with self._lock:
            return {d for _, d in self.arrivals}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _enrol(stack: Stack, n: int) -> list[str]:
    ids = [f"rp-{i:03d}" for i in range(n)]
    with stack.controller.session() as s:
        for d in ids:
            fleet.enrol_device(s, d, "cpu-x86_64", {"site": "lab"})
    return ids


def test_pacing_keeps_the_average_rate_and_never_waits_unpaced() -> None:
    assert pace_delay(0, 100.0, 100.0, 10.0) == 0.0
    assert pace_delay(10, 100.0, 100.5, 10.0) == pytest.approx(0.5)  # the 11th at 1 s, not before
    assert pace_delay(10, 100.0, 102.0, 10.0) == 0.0  # behind: no waiting, no burst beyond catching up
    assert pace_delay(10_000, 100.0, 100.0, 0.0) == 0.0


def test_a_walk_behind_schedule_catches_up_by_a_bounded_burst_only() -> None:
    assert rebase(10, 100.0, 101.05, 10.0) == 100.0  # 0.05 s behind: the schedule stands
    # 1 s behind (a slow page): the schedule moves so the walk is 0.1 s behind, no further
    origin = rebase(10, 100.0, 102.0, 10.0)
    assert origin == pytest.approx(100.9)
    assert pace_delay(10, origin, 102.0, 10.0) == 0.0  # the one message due goes now
    assert pace_delay(12, origin, 102.0, 10.0) == pytest.approx(0.1)  # the rest at the rate again
    assert rebase(10, 100.0, 500.0, 0.0) == 100.0  # unpaced: nothing to move


def test_a_rate_below_zero_is_refused(tmp_path: Path) -> None:
    (tmp_path / "controller.toml").write_text("[controller]\nrepublish_rate_per_s = -1\n")
    with pytest.raises(ConfigError, match="republish_rate_per_s"):
        load_settings(tmp_path, env={})
    (tmp_path / "controller.toml").write_text("[controller]\nrepublish_rate_per_s = 250\n")
    assert load_settings(tmp_path, env={}).republish_rate_per_s == 250


def test_a_new_session_republishes_every_device_paced_while_ingest_goes_on(stack: Stack) -> None:
    c = stack.controller
    ids = _enrol(stack, N)
    creds = device_credentials(stack, "rp-live")  # a real device account (broker ACL written)
    sub = Desired(stack, "test-desired-watch")
    device = mqtt_client(stack.broker, creds["mqtt_username"], creds["mqtt_password"], client_id="rp-live")
    try:
        time.sleep(0.5)  # the subscription is in place (nothing retained for these devices yet)
        c.republisher.rate_per_s = RATE
        sends: list[tuple[float, int]] = []  # when each page left the walker, and its size
        publish_many = c.republisher.publish_many
        assert publish_many is not None

        def timed(s: Any, chunk: list[Any]) -> int:
            sends.append((time.monotonic(), len(chunk)))
            return publish_many(s, chunk)  # the controller's real signing and publishing

        c.republisher.publish_many = timed
        walker = c.republisher.start("test: broker lost its state")
        wait_until(lambda: c.republisher.last is not None and c.republisher.last.sent >= 5, timeout=30,
                   message="the walk under way")
        device.publish("fleet/v1/devices/rp-live/status",
                       encode(Status(device_id="rp-live", online=True, hardware_id="cpu-x86_64")), qos=1)

        def online() -> bool:
            with c.session() as s:
                d = s.get(Device, "rp-live")
                return bool(d and d.online)

        wait_until(online, timeout=30, message="the device's status applied")
        walk = c.republisher.last
        assert walk is not None
        applied_during_walk = walk.finished_at is None
        walker.join(timeout=120)
        assert walk.finished_at is not None and not walk.cancelled
        assert (walk.sent, walk.failed) == (N + 1, 0)
        assert applied_during_walk  # ingest was not held up behind the re-publish
        wait_until(lambda: sub.devices() >= {*ids, "rp-live"}, timeout=30, message="every device's desired seen")
        # paced, as the walker sends (arrival times at a subscriber bunch up on a loaded
        # machine, so they are not the measure): the last page waits until the pages before it
        # are due, and no second sees more than the rate, its bounded catch-up and one page
        last_page = c.republisher._step()
        assert walk.finished_at - walk.started_at >= (N + 1 - last_page) / RATE * 0.99
        per_window = max(sum(n for u, n in sends if t <= u < t + 1.0) for t, _ in sends)
        assert per_window <= RATE * (1 + CATCH_UP_S) + last_page
    finally:
        sub.close()
        device.loop_stop()
        device.disconnect()


@pytest.mark.skipif(not MosquittoBroker.available(), reason="mosquitto is not installed")
def test_a_persistent_broker_restarted_keeps_desired_and_nothing_is_republished(tmp_path: Path) -> None:
    broker = MosquittoBroker(data_dir=tmp_path / "mosquitto", auth_dir=tmp_path / "broker-auth")
    broker.start()
    stack = start_stack(tmp_path / "controller", broker)
    try:
        c = stack.controller
        ids = _enrol(stack, 20)
        wait_until(lambda: c.republisher.last is not None and c.republisher.last.finished_at is not None,
                   timeout=30, message="the first connection's walk (a new session) done")
        first = c.republisher.last
        c.republish_all()  # retained desired for every device enrolled since
        watch = Desired(stack, "test-watch-1")
        wait_until(lambda: watch.devices() >= set(ids), timeout=30, message="retained desired in place")
        watch.close()
        assert c.bridge is not None
        broker.stop()
        wait_until(lambda: not c.bridge.connected.is_set(), timeout=15, message="bridge lost the broker")
        broker.start()  # same port, same store
        wait_until(lambda: c.bridge.connected.is_set(), timeout=60, message="bridge back")
        assert c.bridge.session_present is True
        time.sleep(1.0)  # the resync thread ran (and decided)
        assert c.republisher.last is first  # no walk: the broker kept what it had
        late = Desired(stack, "test-watch-2")
        try:
            wait_until(lambda: late.devices() >= set(ids), timeout=30, message="retained desired kept")
        finally:
            late.close()
    finally:
        stack.stop()
        broker.stop()
