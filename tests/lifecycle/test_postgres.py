"""The lifecycle on PostgreSQL (migration 0012, row locks): a block aborts the live rollouts
of the version in its own transaction, leaves others alone, and refuses the version after."""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session, select

from edgefleet.cloud import catalog, lifecycle
from edgefleet.cloud.audit import AuditEntry
from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.errors import ModelBlocked
from edgefleet.cloud.rollout.service import RolloutCreate, get_row, start_rollout
from edgefleet.registry import LocalBlobStore

pytestmark = pytest.mark.slow  # a throwaway PostgreSQL cluster takes a while to start

def test_block_on_postgresql_aborts_its_rollouts_and_refuses_the_version(postgres, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(postgres)
    migrate(engine)
    store = LocalBlobStore(tmp_path / "blobs")
    now = time.time()
    try:
        with Session(engine, expire_on_commit=False) as s:
            for i in range(2):
                fleet.enrol(s, f"cam-{i}", "cpu-x86_64")
            a, b = digit_models
            mv_a, _ = catalog.push_model(s, store, a.path.read_bytes(), name="digits", version="1.0",
                                         manifest=a.manifest.model_dump(mode="json", by_alias=True), pushed_by="ci")
            catalog.push_model(s, store, b.path.read_bytes(), name="digits", version="2.0",
                               manifest=b.manifest.model_dump(mode="json", by_alias=True))
            blocked = start_rollout(s, RolloutCreate(model="digits:1.0", select="device:cam-0"), now, actor="ci").id
            other = start_rollout(s, RolloutCreate(model="digits:2.0", select="device:cam-1"), now, actor="ci").id
            change = lifecycle.set_status(s, mv_a, "blocked", reason="bad", actor="ci", role="operator", now=now)
        assert change.aborted_rollouts == [blocked] and change.previous == "active"
        with Session(engine) as s:
            assert get_row(s, blocked).state == "aborted" and get_row(s, other).state == "pending"
            mv = catalog.get_version(s, "digits:1.0")
            assert (mv.status, mv.status_reason, mv.status_by, mv.pushed_by) == ("blocked", "bad", "ci", "ci")
            assert len(mv.model_sha256 or "") == 64
            assert [(e.action, e.target) for e in s.exec(select(AuditEntry)).all()] == [("rollout.abort", blocked)]
            with pytest.raises(ModelBlocked):
                start_rollout(s, RolloutCreate(model="digits:1.0", select="device:cam-0"), now, actor="ci")
            with pytest.raises(ModelBlocked):
                fleet.deploy(s, None, mv, "control", ["cam-0"])
    finally:
        engine.dispose()
