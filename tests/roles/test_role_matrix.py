"""Each role against each kind of action: viewer reads, operator deploys, admin manages tokens."""

from __future__ import annotations

import httpx
import pytest

from edgefleet.cloud.auth import ROLES

# (action, method, path, json body, lowest role allowed)
ACTIONS = [
    ("list devices", "GET", "/api/v1/devices", None, "viewer"),
    ("list a filtered page of devices", "GET", "/api/v1/devices?limit=1&state=offline&tag=site=a", None, "viewer"),
    ("count devices", "GET", "/api/v1/devices/counts", None, "viewer"),
    ("read one model", "GET", "/api/v1/models/digits/versions/1.0", None, "viewer"),
    ("read drift", "GET", "/api/v1/models/digits/versions/1.0/drift", None, "viewer"),
    ("scrape metrics", "GET", "/metrics", None, "viewer"),
    ("read the capture policy", "GET", "/api/v1/settings/capture", None, "viewer"),
    ("change the capture policy", "PATCH", "/api/v1/settings/capture", {"max_per_minute": 7}, "operator"),
    ("list capture campaigns", "GET", "/api/v1/campaigns", None, "viewer"),
    ("list scoped policies", "GET", "/api/v1/policies", None, "viewer"),
    ("set a scoped policy", "PUT", "/api/v1/policies/roles-night",
     {"select": "all", "windows": [{"days": ["daily"], "start": "02:00", "duration": "1h"}]}, "operator"),
    ("read the fleet-wide windows", "GET", "/api/v1/settings/windows", None, "viewer"),
    ("set the fleet-wide windows", "PUT", "/api/v1/settings/windows", {"windows": []}, "operator"),
    ("explain one device's policy", "GET", "/api/v1/devices/cam-1/policy", None, "viewer"),
    ("deploy", "POST", "/api/v1/deployments", {"model": "digits:1.0", "slot": "control", "devices": ["cam-1"]}, "operator"),
    ("enrol a device", "POST", "/api/v1/devices", {"id": "cam-new", "hardware_id": "cpu"}, "admin"),
    ("list tokens", "GET", "/api/v1/tokens", None, "admin"),
    ("create a token", "POST", "/api/v1/tokens", {"name": "x", "role": "viewer"}, "admin"),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("action", "method", "path", "body", "needed"), ACTIONS, ids=[a[0] for a in ACTIONS])
def test_role_may_do_exactly_what_its_rank_allows(server, role, action, method, path, body, needed) -> None:  # type: ignore[no-untyped-def]
    resp = httpx.request(method, server.url + path, json=body, headers={"Authorization": f"Bearer {server.tokens[role]}"})
    allowed = ROLES.index(role) >= ROLES.index(needed)
    if allowed:
        assert resp.status_code < 400, (role, action, resp.status_code, resp.text)
    else:
        assert resp.status_code == 403, (role, action, resp.status_code, resp.text)
        assert needed in resp.json()["detail"]


@pytest.mark.parametrize("role", ROLES)
def test_removing_a_scoped_policy_needs_an_operator(server, role) -> None:  # type: ignore[no-untyped-def]
    name = f"roles-rm-{role}"
    made = httpx.put(server.url + f"/api/v1/policies/{name}", json={"select": "all", "capture": {"sample_rate": 0.1}},
                     headers={"Authorization": f"Bearer {server.tokens['admin']}"})
    assert made.status_code == 200, made.text
    resp = httpx.delete(server.url + f"/api/v1/policies/{name}", headers={"Authorization": f"Bearer {server.tokens[role]}"})
    assert resp.status_code == (200 if ROLES.index(role) >= ROLES.index("operator") else 403), resp.text


def test_reviewer_reads_but_cannot_deploy(server) -> None:  # type: ignore[no-untyped-def]
    h = {"Authorization": f"Bearer {server.tokens['reviewer']}"}
    assert httpx.get(server.url + "/api/v1/devices", headers=h).status_code == 200
    r = httpx.post(server.url + "/api/v1/deployments", headers=h, json={"model": "digits:1.0", "devices": ["cam-1"]})
    assert r.status_code == 403


def test_device_token_is_not_a_user_role(server) -> None:  # type: ignore[no-untyped-def]
    with server.controller.session() as s:
        from edgefleet.cloud.devices.fleet import enrol_device

        device_token = enrol_device(s, "cam-dev-token")
    r = httpx.get(server.url + "/api/v1/devices", headers={"Authorization": f"Bearer {device_token}"})
    assert r.status_code == 403
