"""Controllers without MQTT for the batched-ingest tests: real database (SQLite, or
PostgreSQL through the ``postgres`` fixture), real handlers, signed messages.

``pair`` gives two controllers on two databases of the same kind, so a message stream can
be applied one message at a time (``Controller._on_*``, today's path) to one and in a batch
(``devices.batch.apply``) to the other, and the stored results compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from edgefleet.cloud.db import make_engine
from edgefleet.cloud.devices import batch, fleet
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import Reported, Status, Telemetry, decode

from ..signed_reports.keys import SimKey, register


def controller_on(data_dir: Path, database_url: str | None = None) -> Controller:
    settings = load_settings(data_dir, env={}, **({"database_url": database_url} if database_url else {}))
    controller = Controller(settings)
    controller.migrate()
    return controller


def enrol(controller: Controller, device_id: str, key: SimKey, hardware_id: str = "cpu-x86_64") -> None:
    with controller.session() as s:
        fleet.enrol_device(s, device_id, hardware_id)
    register(controller, key)


def one_by_one(controller: Controller, msg: Any) -> str:
    """Today's per-message path; the outcome as the bridge counts it."""
    handler = {Status: controller._on_status, Reported: controller._on_reported,
               Telemetry: controller._on_telemetry}[type(msg)]
    try:
        handler(msg)
    except Exception as exc:
        outcome = getattr(exc, "outcome", None)
        return outcome if isinstance(outcome, str) else "error"
    return "ok"


def outcome(result: BaseException | None) -> str:
    if result is None:
        return "ok"
    got = getattr(result, "outcome", None)
    return got if isinstance(got, str) else "error"


def batched(controller: Controller, msgs: list[Any]) -> list[str]:
    return [outcome(r) for r in batch.apply(controller.ingest_session, msgs,
                                            check_labels=controller.labels.check_telemetry,
                                            replay_window=controller.settings.replay_window)]


@dataclass
class Fleet:
    """Devices with report keys, enrolled on every controller given."""

    controllers: list[Controller]
    keys: dict[str, SimKey]

    def add(self, device_id: str) -> SimKey:
        key = self.keys[device_id] = SimKey(device_id)
        for c in self.controllers:
            enrol(c, device_id, key)
        return key

    def signed(self, msg: Any, *, seq: int | None = None) -> Any:
        """The message as the bridge decodes it from the device's signed bytes."""
        return decode(self.keys[msg.device_id].sign(msg, seq=seq), type(msg))


@pytest.fixture(params=["sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Controller, Controller]]:
    if request.param == "sqlite":
        a, b = controller_on(tmp_path / "one"), controller_on(tmp_path / "batch")
    else:
        url: str = request.getfixturevalue("postgres")
        engine = make_engine(url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("DROP DATABASE IF EXISTS batch_twin"))
            conn.execute(text("CREATE DATABASE batch_twin"))
        engine.dispose()
        a = controller_on(tmp_path / "one", url)
        b = controller_on(tmp_path / "batch", url.rsplit("/", 1)[0] + "/batch_twin")
    yield a, b
    a.engine.dispose()
    b.engine.dispose()


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    c = controller_on(tmp_path / "controller")
    yield c
    c.engine.dispose()
