"""The agent's own decisions, on one real agent: latency beyond the manifest's budget rolls
back locally; a deployment abandoned because the desired model changed back reports idle."""

from __future__ import annotations

from sqlmodel import select

from edgefleet.cloud.tables import Device, ModelVersion

from ..conftest import push, slot_of, wait_until
from . import candidates


def test_latency_beyond_the_budget_rolls_back_locally(stack, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    dev = agents(stack, "cam-lat", fps=10.0).device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "healthy", message="1.0 healthy")
    tight = candidates._with(digit_models[0], digit_models[0].path, "1.1-tight", latency_budget_ms=0.001)
    push(stack, tight)
    stack.client.deploy("digits:1.1-tight", "control", [dev])  # the controller does not judge: the agent does
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_HEALTH_LATENCY", message="E_HEALTH_LATENCY")
    s = slot_of(stack, dev)
    assert s["installed"] == "digits:1.0" and s["phase"] == "rolled_back" and "budget" in s["error"]


def test_failed_deployment_withdrawn_reports_idle(stack, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    dev = agents(stack, "cam-idle", fps=10.0).device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "healthy", message="1.0 healthy")
    push(stack, candidates.wrong_vectors(digit_models[0], "1.1-st"))
    stack.client.deploy("digits:1.1-st", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_SELFTEST", message="E_SELFTEST")
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "idle", message="abandoned deployment reported idle")
    s = slot_of(stack, dev)
    assert s["installed"] == "digits:1.0" and s["error_code"] is None


def test_redeploys_after_a_local_rollback_are_never_refused_as_older(stack, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    """After the agent rolled back on its own, sending it its last known good model, or a
    version released *before* the bad one, must not trip the release-counter floor: the
    director re-releases such targets under a new counter."""
    dev = agents(stack, "cam-floor", fps=10.0).device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    push(stack, candidates.retag(digit_models[0], "1.05-early"))  # released before the bad one
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "healthy", message="1.0 healthy")
    push(stack, candidates._with(digit_models[0], digit_models[0].path, "1.1-tight", latency_budget_ms=0.001))
    stack.client.deploy("digits:1.1-tight", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_HEALTH_LATENCY", message="local rollback")
    stack.client.deploy("digits:1.0", "control", [dev])  # the operator confirms the last known good
    # the agent already runs 1.0: nothing to install; the slot keeps its rolled_back verdict
    wait_until(lambda: slot_of(stack, dev)["desired"] == "digits:1.0", message="1.0 desired again")
    stack.client.deploy("digits:1.05-early", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["installed"] == "digits:1.05-early" and slot_of(stack, dev)["phase"] == "healthy",
               message="an earlier-released version installs")
    assert slot_of(stack, dev)["error_code"] is None
    with stack.controller.session() as session:
        counter = {mv.version: mv.release_counter for mv in session.exec(select(ModelVersion)).all()}
        assert counter["1.05-early"] > counter["1.1-tight"]  # re-released above the bad one
        assert session.get(Device, dev).release_floor["control"] == counter["1.05-early"]


def test_failed_bytes_are_retried_only_when_the_controller_releases_them_again(stack, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    """A refusal is final for that release (no retry loop on re-sent desired state), but the
    operator sending the same model again after something else — a new release counter —
    gets a real retry: here the stored bundle was damaged, then repaired."""
    import time

    dev = agents(stack, "cam-again", fps=10.0).device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "healthy", message="1.0 healthy")
    mv = push(stack, candidates.retag(digit_models[1], "1.2"))
    blob = stack.controller.store.path(mv["digest"])
    blob.chmod(0o644)
    good = blob.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    stack.client.deploy("digits:1.2", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_HASH_MISMATCH", message="E_HASH_MISMATCH")
    blob.write_bytes(good)  # the store is repaired

    stack.controller.republish_all()  # the same release again: refused at once, nothing fetched
    time.sleep(1.5)
    s = slot_of(stack, dev)
    assert s["installed"] == "digits:1.0" and s["phase"] == "failed" and s["error_code"] == "E_HASH_MISMATCH"

    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "idle", message="back on 1.0, deployment abandoned")
    stack.client.deploy("digits:1.2", "control", [dev])  # sent anew: released under a new counter
    wait_until(lambda: slot_of(stack, dev)["installed"] == "digits:1.2" and slot_of(stack, dev)["phase"] == "healthy",
               message="1.2 retried and installed")
    with stack.controller.session() as session:
        assert session.exec(select(ModelVersion).where(ModelVersion.version == "1.2")).one().release_counter > mv["release_counter"]
