"""A refusal caused by transport (bytes damaged on the way: ``E_HASH_MISMATCH``) is retried
from a clean fetch with backoff, a few times, before it becomes final for that release;
a refusal of verified-correct bytes (a bad self-test) stays final at once."""

from __future__ import annotations

import time

from edgefleet.edge_agent.updater import DOWNLOAD_ATTEMPTS

from ..conftest import push, slot_of, wait_until
from ..rollout_e2e import candidates


def _healthy_on(stack, dev: str, label: str) -> bool:  # type: ignore[no-untyped-def]
    s = slot_of(stack, dev)
    return s["installed"] == label and s["phase"] == "healthy"


def test_bytes_damaged_in_transit_once_recover_without_operator_action(stack, agents, proxy, digit_models) -> None:  # type: ignore[no-untyped-def]
    ra = agents(stack, "cam-flaky", fps=10.0, controller_url=proxy.url)
    dev = ra.device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    proxy.damage_targets(1)  # the first download arrives with one byte flipped
    phases: list[tuple[str | None, str | None]] = []
    stack.client.deploy("digits:1.0", "control", [dev])

    def installed() -> bool:
        s = slot_of(stack, dev)
        phases.append((s["phase"], s["error_code"]))
        return s["installed"] == "digits:1.0" and s["phase"] == "healthy"

    wait_until(installed, message="installed after a retry from a clean fetch")
    assert proxy.damaged == 1 and proxy.target_fetches == 2  # one damaged fetch, one clean: no resume of bad bytes
    assert ("failed", "E_HASH_MISMATCH") not in phases  # never shown as a final refusal meanwhile
    assert slot_of(stack, dev)["error_code"] is None
    assert stack.client.get_device(dev)["update_blocked"] is None
    assert not list((ra.agent.data_dir / "trust" / "downloads").glob("*.part"))


def test_bytes_that_never_arrive_intact_are_final_after_a_few_fetches(stack, agents, proxy, digit_models) -> None:  # type: ignore[no-untyped-def]
    ra = agents(stack, "cam-broken-link", fps=10.0, controller_url=proxy.url)
    dev = ra.device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    proxy.damage_targets(1000)
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_HASH_MISMATCH" and slot_of(stack, dev)["phase"] == "failed"
               and stack.client.get_device(dev)["update_blocked"] is not None, message="final E_HASH_MISMATCH, blocked")
    assert proxy.target_fetches == DOWNLOAD_ATTEMPTS
    blocked = stack.client.get_device(dev)["update_blocked"]
    assert blocked["code"] == "E_HASH_MISMATCH"
    stack.controller.republish_all()  # the same release again: final, nothing fetched
    time.sleep(1.5)
    assert proxy.target_fetches == DOWNLOAD_ATTEMPTS and slot_of(stack, dev)["installed"] is None


def test_a_bad_self_test_stays_refused_at_once(stack, agents, proxy, digit_models) -> None:  # type: ignore[no-untyped-def]
    dev = agents(stack, "cam-selftest", fps=10.0, controller_url=proxy.url).device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: _healthy_on(stack, dev, "digits:1.0"), message="1.0 healthy")
    fetched = proxy.target_fetches
    push(stack, candidates.wrong_vectors(digit_models[0], "1.1-st"))
    stack.client.deploy("digits:1.1-st", "control", [dev])
    # the agent reports the failed slot at once and the refusal (update_blocked) in the next
    # report, once the hint is handled: a fast controller may show the first alone for a moment
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_SELFTEST"
               and stack.client.get_device(dev)["update_blocked"] is not None, message="E_SELFTEST, blocked")
    blocked = stack.client.get_device(dev)["update_blocked"]
    assert blocked["code"] == "E_SELFTEST" and "1.1-st" in blocked["reason"]
    stack.controller.republish_all()
    time.sleep(3.0)  # longer than the first retry backoff (2 s): no retry of verified-correct bytes
    assert proxy.target_fetches == fetched + 1
    s = slot_of(stack, dev)
    assert s["installed"] == "digits:1.0" and s["phase"] == "failed" and s["error_code"] == "E_SELFTEST"
