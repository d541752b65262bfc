"""Two passes (threads or replicas) releasing the policy of the same finished rollout: the
one whose DELETE removes the row tells the members; the other finds nothing left and tells
nobody, without the stale-delete warning ``session.delete`` gave."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from sqlmodel import Session

from edgefleet.cloud import catalog
from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.policy import store as policy_store
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember
from edgefleet.cloud.tables import Device
from edgefleet.registry import LocalBlobStore

MEMBERS = ("cam-1", "cam-2")


def test_a_policy_released_by_a_concurrent_pass_is_released_once(tmp_path: Path, digit_models: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'controller.db'}")
    migrate(engine)
    store = LocalBlobStore(tmp_path / "blobs")
    with Session(engine, expire_on_commit=False) as s:
        m = digit_models[0].manifest
        mv, _ = catalog.push_model(s, store, digit_models[0].path.read_bytes(), name=m.name, version=m.version,
                                manifest=m.model_dump(mode="json", by_alias=True))
        for d in (*MEMBERS, "cam-3"):
            fleet.enrol_device(s, d, "cpu-x86_64", {})
        s.add(Rollout(id="r1", model_version_id=mv.id or 0, model_name=mv.name, model_version=mv.version,
                      digest=mv.digest, slot="control", select="all", waves="100", soak="0s",
                      on_breach="rollback", device_timeout="10m", state="aborted", state_json="{}"))
        s.commit()
        for d in MEMBERS:
            s.add(RolloutMember(rollout_id="r1", device_id=d, wave=0, assigned_at=0.0))
        s.commit()
        policy_store.put_rollout_policy(s, "r1", windows=None, network={"download": "unmetered"}, by="test")
        generations = {d.id: d.desired_generation for d in s.query(Device).all()}  # type: ignore[attr-defined]

    first: list[int] = []

    class RacedSession(Session):
        """Another pass releases the policy right after this one has read it."""

        def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
            got = super().get(entity, ident, **kwargs)
            if entity is Rollout and not first:
                with Session(engine, expire_on_commit=False) as other:
                    first.append(policy_store.release_finished(other, None))
            return got

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old session.delete warned "expected to delete 1 row(s); 0 were matched"
        with RacedSession(engine, expire_on_commit=False) as s:
            second = policy_store.release_finished(s, None)

    assert first == [len(MEMBERS)] and second == 0
    with Session(engine) as s:
        assert s.get(policy_store.ScopedPolicy, policy_store.rollout_scope_name("r1")) is None
        after = {d.id: d.desired_generation for d in s.query(Device).all()}  # type: ignore[attr-defined]
    # each member told once, the device outside the rollout not at all
    assert after == {d: g + (1 if d in MEMBERS else 0) for d, g in generations.items()}
    engine.dispose()
