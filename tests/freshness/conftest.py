"""Fixtures of the freshness tests: a faulty HTTP hop in front of the controller, and a
small stale threshold so a lagging device turns stale within seconds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .proxy import FaultyProxy

STALE_AFTER_S = 2.0


@pytest.fixture
def proxy(stack: Any) -> Iterator[FaultyProxy]:
    p = FaultyProxy(stack.url).start()
    yield p
    p.stop()


def set_controller(stack: Any, **changes: Any) -> None:
    """Change the running controller's settings (its loop reads them on every pass)."""
    stack.controller.settings = stack.controller.settings.model_copy(update=changes)


def republish(stack: Any, device_id: str) -> None:
    """What any change of desired state does: bump the generation, sign, publish the hint."""
    from edgefleet.cloud.tables import Device

    with stack.controller.session() as s:
        device = s.get(Device, device_id)
        device.desired_generation += 1
        s.add(device)
        s.commit()
        stack.controller.publish_device(s, device)
