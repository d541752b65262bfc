"""A man-in-the-middle that serves a stale but validly signed director timestamp freezes
a device's view. The device keeps running and reporting (signed), but its signed state
lags what the director signed for it: within ``stale_after_s`` it shows as *stale* with
the reason in the API, ``fleet device ls``, the fleet page and the metrics, and a rollout
never counts it healthy. Once the link is clean again it catches up on its own."""

from __future__ import annotations

import time

import httpx
from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app

from ..conftest import push, slot_of, wait_until
from ..rollout_e2e import candidates
from .conftest import STALE_AFTER_S, set_controller


def _metric(stack, name: str) -> float:  # type: ignore[no-untyped-def]
    text = httpx.get(f"{stack.url}/metrics", headers={"Authorization": f"Bearer {stack.token}"}).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def _wave_counts(stack, rid: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return stack.client.rollout_status(rid, devices=False, events=0)["waves"][0]["counts"]


def test_frozen_director_shows_stale_and_a_rollout_never_counts_it_healthy(
        stack, agents, proxy, digit_models) -> None:  # type: ignore[no-untyped-def]
    set_controller(stack, stale_after_s=STALE_AFTER_S)
    dev = agents(stack, "cam-frozen", fps=10.0, controller_url=proxy.url).device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "healthy", message="1.0 healthy")
    d = stack.client.get_device(dev)
    assert d["reported_director_version"] == d["director_version"] and not d["stale"]
    assert _metric(stack, "edgefleet_devices_stale") == 0

    proxy.freeze_director(dev)  # from now on the device sees an old (validly signed) timestamp
    rid = stack.client.start_rollout("digits:1.0", waves="100", soak="1s", gates=["failure<=0.5"],
                                     device_timeout="10m")["id"]
    # the rollout's assignment is signed as a new director version the device cannot see
    d = wait_until(lambda: (x := stack.client.get_device(dev))["stale"] and x, timeout=STALE_AFTER_S + 15,
                   message="device shown stale")
    assert d["reported_director_version"] < d["director_version"]
    assert "director" in d["stale_reason"] and "E_HINT_UNCONFIRMED" in d["stale_reason"]
    assert d["update_blocked"]["code"] == "E_HINT_UNCONFIRMED"
    assert d["online"] and d["slots"]["control"]["installed"] == "digits:1.0"  # running, reporting: just frozen
    assert proxy.frozen_hits > 0
    assert _metric(stack, "edgefleet_devices_stale") == 1

    ls = CliRunner().invoke(fleet_app, ["device", "ls", "--url", stack.url, "--token", stack.token])
    assert ls.exit_code == 0, ls.output
    assert f"stale {dev}: holds director metadata v{d['reported_director_version']}" in ls.output  # the reason, under the table
    assert "E_HINT_UNCONFIRMED" in ls.output

    page = httpx.get(f"{stack.url}/ui/fleet", headers={"Authorization": f"Bearer {stack.token}"})
    assert page.status_code == 200
    assert 'class="badge bad stale"' in page.text and "E_HINT_UNCONFIRMED" in page.text

    # the rollout: the device runs the model and says healthy, but is never counted so
    counts = wait_until(lambda: (c := _wave_counts(stack, rid)).get("stale") and c, message="rollout counts it stale")
    assert "healthy" not in counts and "active" not in counts
    for _ in range(3):  # several reconcile passes (0.5 s) and more than the soak: still waiting
        st = stack.client.rollout_status(rid, devices=True, events=0)
        assert st["state"] in ("running", "soaking") and st["on_model"] == 0, st  # never past the gate
        assert [m["status"] for m in st["members"]] == ["stale"]
        time.sleep(0.7)

    proxy.thaw(dev)  # the link is clean again: the device catches up by itself
    wait_until(lambda: not stack.client.get_device(dev)["stale"], message="fresh again")
    d = stack.client.get_device(dev)
    assert d["reported_director_version"] == d["director_version"] and d["update_blocked"] is None
    wait_until(lambda: stack.client.rollout_status(rid, devices=False, events=0)["state"] == "completed",
               message="rollout completes once the device's signed state is fresh")
    assert _metric(stack, "edgefleet_devices_stale") == 0
