"""The agent's own decisions, on one real agent: latency beyond the manifest's budget rolls
back locally; a deployment abandoned because the desired model changed back reports idle."""

from __future__ import annotations

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
