"""In headless Chromium: what each role sees and can do, and that the drift page renders.

Debian's chromium driven by Playwright's Python package; skipped (with the reason) when
/usr/bin/chromium is not installed.
"""

from __future__ import annotations

import httpx
import pytest

from edgefleet.cloud.devices import fleet

from .browser import chromium_path, login

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium at /usr/bin/chromium")]



def test_unauthenticated_browser_lands_on_the_login_form(live, page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    resp = page.goto(f"{live.url}/ui/fleet")
    assert resp.status == 401
    assert page.locator("#token").is_visible()
    page.fill("#token", "efk_wrong")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text().startswith("That token is not valid")
    page.screenshot(path=str(tmp_path / "login.png"))


def test_viewer_sees_the_fleet_and_no_action_buttons_and_the_api_refuses_the_action(live, page) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens["viewer"])
    assert page.locator("#devices tbody tr").count() == len(live.fleet.device_ids)
    assert page.locator("tr[data-device=cam-dock-01] svg.spark").count() == 2
    assert page.locator("[data-action]").count() == 0
    assert page.locator("input[name=device]").count() == 0
    assert page.locator("nav a").all_inner_texts() == ["Fleet", "Rollouts", "Review", "Confusion", "Models"]  # no Tokens for a viewer
    assert page.context.cookies()[0]["httpOnly"] is True
    assert page.evaluate("document.cookie") == ""  # the token is not readable by scripts
    # the same action the operator's button sends, straight to the API with the viewer's token
    r = httpx.post(f"{live.url}/api/v1/deployments", json={"model": "digits:1.0", "slot": "control", "all": True},
                   headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.status_code == 403
    # and from the viewer's page, through the UI's own path
    status = page.evaluate("""() => window.edgefleet.send('POST', '/v1/deployments',
        {model: 'digits:1.0', slot: 'control', all: true}).then(r => r.status)""")
    assert status == 403


def test_filters_narrow_the_table(live, page) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens["viewer"])
    page.select_option("#filter-hw", "jetson-agx-orin")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**hw=jetson-agx-orin**")
    assert sorted(page.locator("#devices tbody tr").evaluate_all("rs => rs.map(r => r.dataset.device)")) == [
        "cam-gate-01", "cam-gate-02"]


def test_operator_deploys_from_the_fleet_page(live, page) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens["operator"])
    with live.controller.session() as s:
        before = fleet.get_device(s, "cam-lab-01").desired_generation
    page.check("input[name=device][value=cam-lab-01]")
    page.select_option("#deploy-actions select[name=model]", "digits:2.0")
    page.select_option("#deploy-actions select[name=slot]", "control")
    page.once("dialog", lambda d: d.accept())
    page.click("#deploy-actions [data-action]")
    page.wait_for_selector("#flash:not([hidden])")
    assert "digits:2.0 assigned to the control slot of 1 device" in page.inner_text("#flash")
    with live.controller.session() as s:
        assert fleet.get_device(s, "cam-lab-01").desired_generation == before + 1


def test_admin_creates_a_token_in_the_browser_and_it_works(live, page) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens["admin"], "/ui/tokens")
    page.fill("#token-form input[name=name]", "dashboard")
    page.select_option("#token-form select[name=role]", "viewer")
    page.click("#token-form [data-action]")
    page.wait_for_selector("#flash:not([hidden])")
    text = page.inner_text("#flash")
    secret = text.strip().splitlines()[-1]
    assert "dashboard (viewer)" in text and secret.startswith("efk_")
    assert httpx.get(f"{live.url}/api/v1/devices", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_model_page_renders_charts_drift_and_the_evidently_report(live, page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens["viewer"], "/ui/models/digits/1.0")
    assert page.locator("svg.chart").count() >= 4
    assert page.locator("#drift-tile b").inner_text() not in ("", "n/a")
    report = page.frame_locator("iframe.report")
    report.locator("text=Jensen-Shannon").first.wait_for(timeout=30000)
    page.screenshot(path=str(tmp_path / "model.png"), full_page=True)
