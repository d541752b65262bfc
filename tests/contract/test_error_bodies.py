"""Every error body from a live controller follows ``ErrorBody`` with a stable code, and the
typed client carries that code; values the schema forbids are refused before a handler."""

from __future__ import annotations

import httpx
import pytest

from edgefleet.cloud.api.problems import ErrorBody
from edgefleet.cloud.client import ApiClient, ApiError


def _error(r: httpx.Response, status: int, code: str) -> ErrorBody:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = ErrorBody.model_validate(r.json())
    assert body.code == code and body.message, r.text
    return body


def test_each_kind_of_error_has_the_one_body_and_its_code(stack) -> None:
    url, admin = f"{stack.url}/api/v1", {"Authorization": f"Bearer {stack.token}"}
    viewer = stack.client.create_token("contract-viewer", "viewer")["token"]
    with httpx.Client(base_url=url, timeout=20) as http:
        _error(http.get("/devices"), 401, "E_UNAUTHORIZED")  # from the auth dependency
        _error(http.get("/devices", headers={"Authorization": "Bearer efk_nope"}), 401, "E_UNAUTHORIZED")
        _error(http.get("/tokens", headers={"Authorization": f"Bearer {viewer}"}), 403, "E_FORBIDDEN")
        _error(http.get("/devices/cam-nowhere", headers=admin), 404, "E_NOT_FOUND")
        _error(http.get("/no-such-route", headers=admin), 404, "E_NOT_FOUND")
        # the last admin token cannot be revoked: 409, the handler's message kept
        admin_id = next(t["id"] for t in stack.client.list_tokens() if t["role"] == "admin")
        assert "last active admin" in _error(http.delete(f"/tokens/{admin_id}", headers=admin), 409,
                                             "E_CONFLICT").message
        invalid = _error(http.post("/tokens", json={"name": "x", "role": "superuser"}, headers=admin),
                         422, "E_VALIDATION")
        assert invalid.detail[0]["loc"] == ["body", "role"]  # the field errors, as FastAPI lists them
        _error(http.post("/tokens", content=b"[" * 100 + b"]" * 100, headers={**admin, "Content-Type": "application/json"}),
               400, "E_BAD_REQUEST")  # nested too deep (hygiene middleware)
        _error(http.post("/tokens", content=b'"' + b"x" * (3 * 1024 * 1024) + b'"',
                         headers={**admin, "Content-Type": "application/json"}), 413, "E_TOO_LARGE")
    with pytest.raises(ApiError) as err:
        stack.client.get_device("cam-nowhere")
    assert err.value.status_code == 404 and err.value.code == "E_NOT_FOUND" and "cam-nowhere" in err.value.detail


def test_values_the_schema_forbids_are_refused_before_the_handler(stack) -> None:
    admin = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=f"{stack.url}/api/v1", headers=admin, timeout=20) as http:
        for path, params in [("/events", {"until": "0.5"}), ("/audit", {"since": "1700000000"}),
                             ("/review/queue", {"verdict": "maybe"}), ("/events", {"pair": "a,b"}),
                             ("/events", {"control": "no-version"}), ("/rollouts", {"state": "dancing"}),
                             ("/rollouts", {"limit": 0})]:
            _error(http.get(path, params=params), 422, "E_VALIDATION")
        assert http.get("/events", params={"until": "2026-01-31T12:00:00Z", "pair": "a:1,b:2"}).status_code == 200
        # filters combine: a pair that disagrees with control names nothing (no 400 for a schema-valid query)
        assert http.get("/events", params={"pair": "a:1,b:2", "control": "c:3"}).json() == []
        _error(http.post("/deployments", json={"model": "m:1", "devices": []}), 422, "E_VALIDATION")  # devices or all
        _error(http.patch("/settings/capture", json={"near_band": False}), 422, "E_VALIDATION")
        _error(http.patch("/settings/capture", json={"no_such_setting": 1}), 422, "E_VALIDATION")


def test_the_client_reports_every_field_of_a_422(stack) -> None:
    client = ApiClient(stack.url, stack.token)
    try:
        with pytest.raises(ApiError) as err:
            client.start_rollout("m:1", soak="30", device_timeout="x")
        assert err.value.status_code == 422 and err.value.code == "E_VALIDATION"
        assert "soak" in err.value.detail and "device_timeout" in err.value.detail
    finally:
        client.close()
