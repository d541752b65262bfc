"""The pure parts: the signed device binding (director → verifier), the hint-vs-signed
comparison, the controller's lag/stale bookkeeping and the rollout's healthy rule."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edgefleet.cloud.rollout import DeviceObservation, DeviceStatus, classify
from edgefleet.cloud.tables import Device
from edgefleet.cloud.trust import freshness
from edgefleet.edge_agent.updater import unconfirmed_reason
from edgefleet.protocols import CapturePolicy, Desired, DeviceSettings, ModelRef, Phase
from edgefleet.registry.tuf import CheckResult, RepositoryStateError, TufError
from edgefleet.registry.tuf.director import DEVICE_FIELD

from ..trust.conftest import HW, make_env

SETTINGS = DeviceSettings(telemetry_period_s=2.5, capture=CapturePolicy(sample_rate=0.125))


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    e = make_env(tmp_path)
    yield e
    e.server.shutdown()
    e.server.server_close()


def test_settings_generation_and_epoch_travel_in_the_signed_binding(env) -> None:  # type: ignore[no-untyped-def]
    dev = env.device("dev-1")
    version = env.director.assign("dev-1", HW, {}, generation=7, settings=SETTINGS.model_dump(mode="json"),
                                  credentials_epoch=3)
    res = dev.check(hint=version)
    assert (res.generation, res.credentials_epoch, res.director_version) == (7, 3, version)
    assert DeviceSettings.model_validate(res.settings) == SETTINGS  # floats survive canonical JSON (as text)
    assert env.director.binding("dev-1")["settings"] == SETTINGS.model_dump(mode="json")
    held = dev.held()
    assert held["director"].version == version and held["director"].expires is not None
    assert held["image"].version >= 1 and held["image"].timestamp_version is not None


def test_metadata_without_settings_leaves_them_unconfirmed(env) -> None:  # type: ignore[no-untyped-def]
    dev = env.device("dev-1")
    env.director.assign("dev-1", HW, {})
    res = dev.check()
    assert res.settings is None and res.generation is None and res.credentials_epoch is None


@pytest.mark.parametrize("field, value", [("generation", -1), ("generation", "7"), ("credentials_epoch", True),
                                           ("settings", {"telemetry_period_s": 1}), ("settings", "[1, 2]"),
                                           ("settings", "{not json")])
def test_a_malformed_signed_binding_is_refused(env, field, value) -> None:  # type: ignore[no-untyped-def]
    dev = env.device("dev-1")
    env.director.assign("dev-1", HW, {}, generation=1)
    repo = env.director.device_repo("dev-1")
    t = copy.deepcopy(repo.targets().signed)
    t.version += 1
    t.unrecognized_fields[DEVICE_FIELD] = {**t.unrecognized_fields[DEVICE_FIELD], field: value}
    repo.commit({"targets": t})  # validly signed by the director, but malformed
    with pytest.raises(TufError) as ei:
        dev.check()
    assert ei.value.code == "E_METADATA" and field in str(ei.value)


def test_the_director_refuses_to_sign_a_bad_generation_or_unencodable_settings(env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RepositoryStateError):
        env.director.assign("dev-1", HW, {}, generation=-1)
    with pytest.raises(RepositoryStateError):
        env.director.assign("dev-1", HW, {}, settings={"telemetry_period_s": float("nan")})


def _result(generation: int | None = 5, director: int = 9, hint: int | None = 9, epoch: int | None = 2) -> CheckResult:
    return CheckResult([], director, hint, generation=generation, settings=SETTINGS.model_dump(mode="json"),
                       credentials_epoch=epoch)


@pytest.mark.parametrize("hint, result, words", [
    (dict(generation=5, director_version=9, credentials_epoch=2, settings=SETTINGS), _result(), None),
    (dict(generation=4, director_version=8, credentials_epoch=0), _result(), None),  # late hint: not reported
    (dict(generation=6, director_version=9, credentials_epoch=2, settings=SETTINGS), _result(), ["generation 6"]),
    (dict(generation=5, director_version=10, credentials_epoch=2, settings=SETTINGS), _result(hint=10),
     ["director version 10"]),
    (dict(generation=5, director_version=9, credentials_epoch=2,
          settings=DeviceSettings(telemetry_period_s=3600, capture=SETTINGS.capture)), _result(), ["telemetry_period_s"]),
    (dict(generation=5, director_version=9, credentials_epoch=2,
          settings=SETTINGS.model_copy(update={"capture": CapturePolicy(sample_rate=1.0)})), _result(),
     ["capture.sample_rate"]),
    (dict(generation=5, director_version=9, credentials_epoch=7, settings=SETTINGS), _result(), ["credentials epoch 7"]),
    (dict(generation=6, director_version=None, settings=SETTINGS), _result(hint=None), ["generation 6"]),
])
def test_a_hint_is_unconfirmed_when_it_claims_more_than_the_signed_metadata(hint, result, words) -> None:  # type: ignore[no-untyped-def]
    desired = Desired(device_id="dev-1", **hint)
    signed = DeviceSettings.model_validate(result.settings)
    reason = unconfirmed_reason(desired, result, signed)
    if words is None:
        assert reason is None
    else:
        assert reason is not None and all(w in reason for w in words), reason


def _device(**kw) -> Device:  # type: ignore[no-untyped-def]
    d = Device(id="dev-1", hardware_id=HW, desired_generation=4, director_version=6, reported_generation=4,
               reported={"director": {"version": 6}})
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def test_lag_opens_and_closes_with_signed_state() -> None:
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    d = _device()
    assert freshness.lag_reason(d) is None and not freshness.update(d, now)
    d.director_version = 7  # the director signs a new version
    assert freshness.update(d, now) and d.lagging_since == now
    assert "holds director metadata v6, the director signed v7" in freshness.lag_reason(d)
    assert not freshness.update(d, now + timedelta(seconds=5))  # lag keeps its start
    d.reported = {"director": {"version": 7}, "update_blocked": {"code": "E_HINT_UNCONFIRMED", "reason": "x"}}
    d.desired_generation = 5
    assert "reports generation 4, desired 5" in freshness.lag_reason(d)
    assert "E_HINT_UNCONFIRMED" in freshness.lag_reason(d)
    d.stale_since, d.stale_reason = now, "old"
    d.reported_generation = 5
    assert freshness.update(d, now) and (d.lagging_since, d.stale_since, d.stale_reason) == (None, None, None)
    assert freshness.lag_reason(_device(reported=None)) is None  # never reported: nothing to compare
    assert freshness.lag_reason(_device(revoked_at=now, reported_generation=0)) is None
    assert "generation" in freshness.lag_reason(_device(reported={}, reported_generation=3))  # no director said


REF = ModelRef(name="digits", version="1.0", digest="a" * 64)


@pytest.mark.parametrize("changes, status", [
    ({}, DeviceStatus.HEALTHY),
    ({"phase": Phase.ACTIVE}, DeviceStatus.ACTIVE),
    ({"lagging_since": 150.0}, DeviceStatus.DISPATCHED),
    ({"lagging_since": 150.0, "stale_since": 160.0}, DeviceStatus.STALE),
    ({"lagging_since": 150.0, "stale_since": 160.0, "phase": Phase.ACTIVE}, DeviceStatus.STALE),
    ({"lagging_since": 10.0, "stale_since": 20.0, "dispatched_at": 15.0}, DeviceStatus.TIMED_OUT),  # stale past the timeout
])
def test_a_device_counts_healthy_only_on_fresh_signed_state(changes, status) -> None:  # type: ignore[no-untyped-def]
    obs = DeviceObservation(device_id="dev-1", installed=REF, reported_target=REF, phase=Phase.HEALTHY,
                            wave=0, dispatched_at=140.0, phase_since=140.0)
    from dataclasses import replace

    obs = replace(obs, **changes)
    assert classify(obs, model=REF, device_timeout_s=60.0, wave_started_at=100.0, now=180.0) == status
