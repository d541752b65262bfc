"""A controller database on SQLite with two digit models and a dozen online devices, and a
reconciler that publishes nothing (the pass's database work is what these tests count)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from edgefleet.cloud import catalog
from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.rollout import dirty
from edgefleet.cloud.rollout.reconciler import Reconciler
from edgefleet.protocols import Status
from edgefleet.registry import LocalBlobStore

N = 12
#: tables a pass over a rollout's devices reads or writes
DEVICE_TABLES = re.compile(r"\b(device|rollout_member|slot_assignment|device_history)\b", re.IGNORECASE)


@dataclass
class Statements:
    """Every SQL statement the engine ran while ``counting``."""

    seen: list[str] = field(default_factory=list)

    def touching_devices(self) -> list[str]:
        return [s for s in self.seen if DEVICE_TABLES.search(s)]


@dataclass
class Db:
    engine: Engine
    reconciler: Reconciler
    devices: list[str]

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def counting(self) -> Iterator[Statements]:
        out = Statements()

        def before(_conn, _cursor, statement, _params, _ctx, _many) -> None:  # type: ignore[no-untyped-def]
            out.seen.append(statement)

        event.listen(self.engine, "before_cursor_execute", before)
        try:
            yield out
        finally:
            event.remove(self.engine, "before_cursor_execute", before)

    def marks(self) -> set[str]:
        with self.session() as s:
            return set(dirty.read(s))

    def clear_marks(self) -> None:
        with self.session() as s:
            dirty.clear(s, dirty.read(s))


@pytest.fixture
def db(tmp_path: Path, digit_models) -> Iterator[Db]:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'controller.db'}")
    migrate(engine)
    dirty.enable(engine)
    store = LocalBlobStore(tmp_path / "blobs")
    ids = [f"cam-{i:02d}" for i in range(N)]
    with Session(engine, expire_on_commit=False) as s:
        for model in digit_models:
            m = model.manifest
            catalog.push_model(s, store, model.path.read_bytes(), name=m.name, version=m.version,
                               manifest=m.model_dump(mode="json", by_alias=True))
        for d in ids:
            fleet.enrol_device(s, d, "cpu-x86_64", {"site": "lab"})
            ingest.apply_status(s, Status(device_id=d, online=True, hardware_id="cpu-x86_64"))
    yield Db(engine, Reconciler(engine, None, holder="test-reconciler", lease_ttl_s=1e6), ids)
    engine.dispose()
