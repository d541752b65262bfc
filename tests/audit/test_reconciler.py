"""The reconciler's own rollback on a broken gate is an audit entry (actor ``reconciler``),
written in the same transaction as the rollback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgefleet.cloud import audit, catalog
from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.rollout.service import RolloutCreate, get_row, start_rollout
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import Status


@pytest.mark.parametrize(("on_breach", "action", "state"), [
    ("rollback", "rollout.auto_rollback", ("rolling_back", "rolled_back")),
    ("pause", "rollout.auto_pause", ("breached",)),
])
def test_an_automatic_rollback_or_pause_on_a_gate_breach_is_recorded(tmp_path: Path, digit_models, on_breach, action, state) -> None:  # type: ignore[no-untyped-def]
    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    with c.session() as s:
        for model in digit_models:
            m = model.manifest
            catalog.push_model(s, c.store, model.path.read_bytes(), name=m.name, version=m.version,
                               manifest=m.model_dump(mode="json", by_alias=True))
        fleet.enrol_device(s, "cam-1", "cpu-x86_64", {"site": "lab"})
        ingest.apply_status(s, Status(device_id="cam-1", online=True, hardware_id="cpu-x86_64"))
        rid = start_rollout(s, RolloutCreate(model="digits:2.0", slot="control", waves="100", soak="1s",
                                             gates=["failure<=0"], on_breach=on_breach, device_timeout="5s"),
                            time.time()).id
    t0 = time.time()
    c.reconcile_once(t0)  # wave 0 assigned; the device never answers …
    with c.session() as s:
        assert audit.list_entries(s, actor="reconciler") == []
    c.reconcile_once(t0 + 30)  # (its phase is first seen here) …
    with c.session() as s:
        assert get_row(s, rid).state == "running"
    c.reconcile_once(t0 + 120)  # … it times out: failure 1 > 0, the gate breaks
    c.reconcile_once(t0 + 121)
    with c.session() as s:
        assert get_row(s, rid).state in state
        [entry] = audit.list_entries(s, actor="reconciler")
        report = audit.verify(s, audit.for_controller(c).signer.keys())  # type: ignore[union-attr]
    assert (entry.role, entry.action, entry.target) == ("system", action, rid)
    assert entry.summary["wave"] == 1 and entry.summary["gates_failed"][0].startswith("failure")
    assert report.ok and report.anchors == 1
    c.engine.dispose()
