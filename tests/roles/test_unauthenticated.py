"""401 for a missing, invalid or revoked token on every route except health and login.

The routes are read from the app itself, so a route added later is covered without
editing this file; ``/api/v1/openapi.json`` and ``/api/v1/docs`` are covered too (the
API's shape is for users). Not checked, on purpose: ``/api/v1/health`` and ``/health/live``/``/health/ready`` (for load balancers, public
by design), ``/ui/login`` and ``/ui/logout`` (the login form; clearing a cookie),
``/ui/static/*`` (CSS and JS, no data) and the ``/`` and ``/ui`` redirects to the fleet
page (which then asks for a login).
"""

from __future__ import annotations

import re

import httpx
import pytest

PUBLIC = {"/api/v1/health", "/api/v1/health/live", "/api/v1/health/ready", "/ui/login", "/ui/logout", "/", "/ui"}


def all_routes(app):  # type: ignore[no-untyped-def]
    """Every route, flattened through included routers (FastAPI >= 0.12x keeps them nested)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: include_router copies routes flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def protected_routes(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    out = []
    for route in all_routes(app):
        path = getattr(route, "path", None) or ""
        if path in PUBLIC or path.startswith("/ui/static"):
            continue
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        for method in methods:
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method, path))
    return out


def concrete(path: str) -> str:
    return re.sub(r"\{([^}:]+)(:[^}]+)?\}", lambda m: "0" * 64 if m.group(1) == "digest" else "x1", path)


def _check(server, headers: dict[str, str], cookies: dict[str, str] | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    wrong = []
    routes = protected_routes(server.app)
    assert len(routes) >= 15, routes
    with httpx.Client(base_url=server.url, headers=headers, cookies=cookies) as client:
        for method, path in routes:
            resp = client.request(method, concrete(path))
            if resp.status_code != 401:
                wrong.append(f"{method} {path}: {resp.status_code}")
    return wrong


def test_every_route_but_health_answers_401_without_a_token(server) -> None:  # type: ignore[no-untyped-def]
    assert _check(server, {}) == []


def test_every_route_but_health_answers_401_to_an_unknown_token(server) -> None:  # type: ignore[no-untyped-def]
    bogus = "efk_not-a-real-token"
    assert _check(server, {"Authorization": f"Bearer {bogus}"}, {"edgefleet_token": bogus}) == []


def test_a_revoked_token_gets_401_everywhere_at_once(server) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {server.tokens['admin']}"}
    created = httpx.post(server.url + "/api/v1/tokens", headers=admin, json={"name": "temp", "role": "admin"}).json()
    h = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(server.url + "/api/v1/devices", headers=h).status_code == 200
    assert httpx.delete(server.url + f"/api/v1/tokens/{created['id']}", headers=admin).status_code == 200
    assert _check(server, h, {"edgefleet_token": created["token"]}) == []


def test_health_stays_open(server) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(server.url + "/api/v1/health").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/devices", "/metrics", "/ui/fleet"])
def test_401_names_the_bearer_scheme_or_shows_the_login_form(server, path) -> None:  # type: ignore[no-untyped-def]
    resp = httpx.get(server.url + path)
    assert resp.status_code == 401
    if path.startswith("/ui"):
        assert 'name="token"' in resp.text
    else:
        assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/api/v1/docs"])
def test_api_docs_need_a_viewer_token_as_header_or_ui_cookie(server, path) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(server.url + path).status_code == 401
    viewer = server.tokens["viewer"]
    by_header = httpx.get(server.url + path, headers={"Authorization": f"Bearer {viewer}"})
    by_cookie = httpx.get(server.url + path, cookies={"edgefleet_token": viewer})
    assert by_header.status_code == by_cookie.status_code == 200
    if path.endswith(".json"):
        assert "/api/v1/devices" in by_header.json()["paths"]
    else:
        assert "swagger" in by_cookie.text.lower() and "/api/v1/openapi.json" in by_cookie.text


def test_redoc_and_the_oauth2_redirect_are_not_served(server) -> None:  # type: ignore[no-untyped-def]
    for path in ("/redoc", "/docs/oauth2-redirect", "/docs", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 404, path
