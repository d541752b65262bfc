"""The Evidently import (seconds of interpreter time) waits until ingest is quiet, so a
controller that restarts into a broker-side backlog drains it first (issue 14)."""

from __future__ import annotations

from pathlib import Path

from edgefleet.cloud.bridge import MqttBridge
from edgefleet.cloud.drift import wait_for_quiet

from ..fake_clock import FakeClock
from .conftest import controller_on


def test_waits_until_quiet_has_held_for_the_whole_span() -> None:
    clock = FakeClock()
    busy_until = 10.0
    assert wait_for_quiet(lambda: clock.now >= busy_until, quiet_for_s=3.0, max_wait_s=300.0, poll_s=0.5,
                          clock=clock, sleep=clock.sleep)
    assert busy_until + 3.0 <= clock.now < busy_until + 3.0 + 1.0


def test_a_busy_moment_starts_the_quiet_span_again() -> None:
    clock = FakeClock()
    # quiet, one busy poll at t=2, quiet again: the span counts from after the busy poll
    assert wait_for_quiet(lambda: not (2.0 <= clock.now < 2.5), quiet_for_s=3.0, max_wait_s=300.0, poll_s=0.5,
                          clock=clock, sleep=clock.sleep)
    assert clock.now >= 2.5 + 3.0


def test_never_quiet_gives_up_at_the_limit() -> None:
    clock = FakeClock()
    assert not wait_for_quiet(lambda: False, quiet_for_s=3.0, max_wait_s=20.0, poll_s=0.5,
                              clock=clock, sleep=clock.sleep)
    assert 20.0 <= clock.now < 21.0


def test_a_gate_that_raises_counts_as_quiet_and_done_stops_the_wait() -> None:
    clock = FakeClock()

    def broken() -> bool:
        raise RuntimeError("gate bug")

    assert wait_for_quiet(broken, quiet_for_s=1.0, max_wait_s=60.0, poll_s=0.5, clock=clock, sleep=clock.sleep)
    clock = FakeClock()
    assert not wait_for_quiet(lambda: False, quiet_for_s=1.0, max_wait_s=60.0, poll_s=0.5,
                              done=lambda: clock.now >= 2.0, clock=clock, sleep=clock.sleep)
    assert clock.now == 2.0  # someone imported it meanwhile: no more waiting


def test_controller_is_quiet_only_when_connected_with_nothing_queued(tmp_path: Path) -> None:
    controller = controller_on(tmp_path)
    assert controller.ingest_quiet()  # no MQTT: nothing can queue
    bridge = MqttBridge("127.0.0.1", 1, handlers={})
    controller.bridge = bridge
    assert not controller.ingest_quiet()  # not connected yet: the backlog may be about to arrive
    bridge.connected.set()
    assert controller.ingest_quiet()
    bridge._inbox.put_nowait(object())  # a queued message (the bridge only counts them here)
    assert bridge.backlog == 1
    assert not controller.ingest_quiet()
    bridge._inbox.get_nowait()
    assert controller.ingest_quiet()
