"""Online/offline follows last-heard time: a device not heard for k telemetry periods is
shown offline although no last will arrived, and online again when it is heard."""

from __future__ import annotations

import time

from edgefleet.protocols import Status, encode
from edgefleet.protocols.topics import status_topic

from ..conftest import device_credentials, mqtt_client, wait_until
from .conftest import start_controller


def test_a_silent_device_is_shown_offline_and_online_again_when_heard(tmp_path, broker) -> None:  # type: ignore[no-untyped-def]
    # telemetry period 0.5 s, k = 3: not heard for 1.5 s is offline
    stack = start_controller(tmp_path / "controller", broker, offline_after_periods=3, offline_after_min_s=0)
    try:
        creds = device_credentials(stack, "cam-quiet")
        c = mqtt_client(broker, "cam-quiet", creds["mqtt_password"], client_id="cam-quiet")
        try:
            sent = time.monotonic()  # heard no earlier than this: the lower bound below holds under any load
            c.publish(status_topic("cam-quiet"), encode(Status(device_id="cam-quiet", online=True)), qos=1).wait_for_publish(5)
            wait_until(lambda: stack.client.get_device("cam-quiet")["online"], message="online")
            wait_until(lambda: not stack.client.get_device("cam-quiet")["online"], timeout=15,
                       message="offline without a will")
            assert time.monotonic() - sent >= 1.5  # not before k periods (3 × 0.5 s)
            c.publish(status_topic("cam-quiet"), encode(Status(device_id="cam-quiet", online=True)), qos=1)
            wait_until(lambda: stack.client.get_device("cam-quiet")["online"], message="online again when heard")
        finally:
            c.loop_stop()
            c.disconnect()
    finally:
        stack.stop()


def test_nothing_is_marked_offline_while_the_controller_cannot_hear(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    from sqlmodel import Session

    from edgefleet.cloud.db import make_engine, migrate
    from edgefleet.cloud.devices.presence import IngestWatch, mark_unheard
    from edgefleet.cloud.tables import Device

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    now = time.time()
    with Session(engine) as s:
        s.add(Device(id="cam-a", online=True, last_seen=datetime.fromtimestamp(now - 100, timezone.utc)))
        s.commit()
    watch = IngestWatch(started_at=now - 1000)
    watch.observe(False, "broker unreachable", now - 50)
    watch.observe(True, None, now - 5)  # heard again only 5 s ago
    with Session(engine) as s:
        assert mark_unheard(s, now, 30.0, heard_from=watch.heard_from()) == []  # it could not have heard it
        assert mark_unheard(s, now + 30, 30.0, heard_from=watch.heard_from()) == ["cam-a"]
    assert watch.hold_reason(now, grace_s=10.0) is not None  # within the grace
    assert watch.hold_reason(now + 10, grace_s=10.0) is None
