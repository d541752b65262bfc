"""In headless Chromium: an operator pauses a rollout from its page; a viewer sees the waves
and gates but no command buttons, and the API answers 403 to the same commands.

The rollout is real: started through ``rollout.service`` on the seeded fleet and advanced by
one reconcile pass of the controller (waves assigned, wave 1 sent the model).
"""

from __future__ import annotations

import time

import httpx
import pytest

from edgefleet.cloud.rollout import service
from edgefleet.cloud.rollout.service import RolloutCreate

from .browser import chromium_path, login

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium at /usr/bin/chromium")]


@pytest.fixture(scope="module")
def rollout_id(live) -> str:  # type: ignore[no-untyped-def]
    with live.controller.session() as s:
        row = service.start_rollout(s, RolloutCreate(
            model="digits:2.0", slot="control", select="tag:site=dock|gate", waves="50,100", soak="10m",
            gates=["failure<=0.02", "latency_p99_ratio<=1.2", "agreement>=0.9"]), time.time(), actor="operator-user")
        rid = row.id
    live.controller.reconcile_once()
    return rid



def _state(live, rid: str) -> str:  # type: ignore[no-untyped-def]
    with live.controller.session() as s:
        return str(service.status(s, rid, time.time(), devices=False, events=0)["state"])


def test_viewer_sees_waves_and_gates_but_no_buttons_and_the_api_refuses(live, rollout_id, page) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens["viewer"], "/ui/rollouts")
    assert page.locator(f"#rollouts tr[data-rollout='{rollout_id}']").count() == 1
    assert page.locator("[data-action]").count() == 0
    page.click(f"a[href='/ui/rollouts/{rollout_id}']")
    page.wait_for_url(f"**/ui/rollouts/{rollout_id}")
    assert page.locator("#waves tbody tr").count() == 2
    first_wave = page.locator("#waves tr[data-wave='0']")
    assert "current" in first_wave.inner_text()
    gates = first_wave.locator(".gate").all_inner_texts()
    assert [g.split()[0] for g in gates] == ["failure", "latency_p99_ratio", "agreement"]
    assert all(("<=" in g or ">=" in g) and "·" in g for g in gates)  # figure, op, limit, status
    counts = page.locator("#waves tr[data-wave='0'] td[data-status]").all_inner_texts()
    assert sum(int(c) for c in counts if c) == int(first_wave.locator("td").nth(2).inner_text())
    assert page.locator("[data-action]").count() == 0
    for command in ("pause", "abort", "rollback"):
        status = page.evaluate("""([rid, c]) => window.edgefleet.send('POST', '/v1/rollouts/' + rid + '/' + c, {})
            .then(r => r.status)""", [rollout_id, command])
        assert status == 403
        r = httpx.post(f"{live.url}/api/v1/rollouts/{rollout_id}/{command}",
                       headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
        assert r.status_code == 403
    assert _state(live, rollout_id) == "running"


def test_operator_pauses_the_rollout_from_its_page_then_resume_is_offered(live, rollout_id, page) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens["operator"], f"/ui/rollouts/{rollout_id}")
    buttons = page.locator("#rollout-actions [data-action]").all_inner_texts()
    assert buttons == ["Pause", "Abort", "Roll back"]
    page.click("#rollout-actions [data-action][data-path$='/pause']")
    page.wait_for_selector("#flash:not([hidden])")
    assert _state(live, rollout_id) == "paused"
    page.wait_for_function("() => document.getElementById('rollout-state').textContent === 'paused'", timeout=10000)
    assert page.locator("#rollout-actions [data-action]").all_inner_texts() == ["Resume", "Abort", "Roll back"]
    assert "paused by operator" in page.locator("#events").inner_text() or page.locator("#rollout-reason").count()
