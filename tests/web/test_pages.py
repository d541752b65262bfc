"""The pages over real HTTP: login cookie, filters, what each role is shown, the API proxy."""

from __future__ import annotations

import httpx
import pytest

from edgefleet.cloud.devices import fleet
from edgefleet.cloud.web.auth import safe_next


def page(live, role: str, path: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(live.url + path, cookies={"edgefleet_token": live.tokens[role]})


def test_login_sets_an_httponly_strict_cookie_and_follows_next(live) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(live.url + "/ui/login", data={"token": live.tokens["viewer"], "next": "/ui/models"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/models"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


def test_a_bad_token_gets_the_login_form_again_with_401(live) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(live.url + "/ui/login", data={"token": "efk_wrong", "next": "/ui/fleet"})
    assert r.status_code == 401 and "not valid" in r.text and 'name="token"' in r.text


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/api/v1/tokens", "/ui\\evil"])
def test_login_never_redirects_off_the_ui(target: str) -> None:
    assert safe_next(target) == "/ui/fleet"


def test_fleet_lists_every_device_with_slots_and_sparklines(live) -> None:  # type: ignore[no-untyped-def]
    r = page(live, "viewer", "/ui/fleet")
    assert r.status_code == 200
    for device_id in live.fleet.device_ids:
        assert f'data-device="{device_id}"' in r.text
    assert "digits:1.0" in r.text and "digits:2.0" in r.text and "downloading" in r.text
    assert r.text.count('<svg class="spark"') >= 2 * 4  # latency and agreement where there is data


def test_fleet_filters_by_tag_and_hardware_profile(live) -> None:  # type: ignore[no-untyped-def]
    dock = page(live, "viewer", "/ui/fleet?tag=site=dock").text
    assert 'data-device="cam-dock-01"' in dock and 'data-device="cam-gate-01"' not in dock
    agx = page(live, "viewer", "/ui/fleet?hw=jetson-agx-orin").text
    assert 'data-device="cam-gate-02"' in agx and 'data-device="cam-dock-01"' not in agx
    both = page(live, "viewer", "/ui/fleet?tag=site=dock&hw=jetson-agx-orin").text
    assert "match these filters" in both


def test_viewer_is_shown_no_action_and_no_tokens_nav(live) -> None:  # type: ignore[no-untyped-def]
    for path in ("/ui/fleet", "/ui/models/digits/1.0", "/ui/models"):
        text = page(live, "viewer", path).text
        assert "data-action" not in text, path
        assert 'href="/ui/tokens"' not in text


def test_operator_is_shown_deploy_but_not_tokens(live) -> None:  # type: ignore[no-untyped-def]
    text = page(live, "operator", "/ui/fleet").text
    assert 'data-path="/v1/deployments"' in text and 'href="/ui/tokens"' not in text
    assert page(live, "operator", "/ui/tokens").status_code == 403
    admin = page(live, "admin", "/ui/tokens")
    assert admin.status_code == 200 and "operator-user" in admin.text and 'href="/ui/tokens"' in admin.text


def test_proxy_answers_with_the_apis_own_403_for_a_viewer(live) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "digits:1.0", "slot": "control", "devices": ["cam-lab-01"]}
    r = httpx.post(live.url + "/ui/api/v1/deployments", json=body, cookies={"edgefleet_token": live.tokens["viewer"]},
                   headers={"X-Edgefleet-Request": "1"})
    assert r.status_code == 403 and "operator" in r.json()["detail"]


def test_proxy_refuses_state_changes_without_the_csrf_header(live) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "digits:1.0", "slot": "control", "devices": ["cam-lab-01"]}
    r = httpx.post(live.url + "/ui/api/v1/deployments", json=body, cookies={"edgefleet_token": live.tokens["operator"]})
    assert r.status_code == 403 and "x-edgefleet-request" in r.json()["detail"]


def test_operator_deploys_through_the_proxy(live) -> None:  # type: ignore[no-untyped-def]
    with live.controller.session() as s:
        before = fleet.get_device(s, "cam-yard-01").desired_generation
    body = {"model": "digits:2.0", "slot": "shadow", "devices": ["cam-yard-01"]}
    r = httpx.post(live.url + "/ui/api/v1/deployments", json=body, cookies={"edgefleet_token": live.tokens["operator"]},
                   headers={"X-Edgefleet-Request": "1"})
    assert r.status_code == 200, r.text
    with live.controller.session() as s:
        assert fleet.get_device(s, "cam-yard-01").desired_generation == before + 1


def test_model_page_shows_charts_and_drift(live) -> None:  # type: ignore[no-untyped-def]
    text = page(live, "viewer", "/ui/models/digits/1.0").text
    assert "Latency p99 over time" in text and 'id="drift"' in text
    assert 'class="chart"' in text and "drift&lt;=" in text
    assert page(live, "viewer", "/ui/models/nope/0").status_code == 404


def test_static_assets_are_served_without_login(live) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(live.url + "/ui/static/app.js").status_code == 200
    assert "text/css" in httpx.get(live.url + "/ui/static/app.css").headers["content-type"]
