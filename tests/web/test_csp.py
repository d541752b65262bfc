"""Security headers on every response, and templates CSP can live with.

Every UI page, static file, API answer and error carries the strict Content-Security-Policy
(no ``unsafe-inline``/``unsafe-eval`` scripts), ``nosniff``, ``Referrer-Policy`` and
``X-Frame-Options``; Swagger UI allows its one inline script by hash; the templates hold no
inline script, event handler or style attribute (the browser would refuse them).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edgefleet.cloud import catalog
from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.web.render import HERE
from edgefleet.cloud.web.security import CSP, REPORT_CSP, with_security_headers

PAGES = ["/ui/fleet", "/ui/rollouts", "/ui/review", "/ui/confusion", "/ui/models", "/ui/models/digits/1.0",
         "/ui/tokens", "/ui/audit", "/ui/login"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, digit_models) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    controller = Controller(load_settings(tmp_path_factory.mktemp("csp"), env={}))
    controller.migrate()
    control, _ = digit_models
    with controller.session() as s:
        _, token = create_token(s, "admin-user", "admin")
        catalog.push_model(s, controller.store, control.path.read_bytes(), name=control.manifest.name,
                           version=control.manifest.version,
                           manifest=control.manifest.model_dump(mode="json", by_alias=True))
    with TestClient(create_app(controller)) as c:
        c.cookies.set("edgefleet_token", token)
        c.headers["Authorization"] = f"Bearer {token}"
        yield c
    controller.engine.dispose()


def assert_secure(resp, csp: str = CSP) -> None:  # type: ignore[no-untyped-def]
    assert resp.headers["content-security-policy"] == csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "same-origin"
    assert resp.headers["x-frame-options"] == "SAMEORIGIN"


def test_the_policy_allows_no_inline_or_eval_scripts_and_no_plugins() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'self'" and directives["form-action"] == "'self'"
    assert "unsafe" not in CSP


def test_the_report_policy_sandboxes_without_same_origin_and_forbids_the_network() -> None:
    directives = dict(d.strip().split(" ", 1) for d in REPORT_CSP.split(";"))
    assert directives["sandbox"] == "allow-scripts"
    assert "allow-same-origin" not in REPORT_CSP
    assert directives["connect-src"] == "'none'" and directives["form-action"] == "'none'"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_the_strict_policy(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert_secure(resp)


@pytest.mark.parametrize(("path", "status"), [
    ("/api/v1/devices", 200), ("/api/v1/models", 200), ("/api/v1/nope", 404), ("/ui/static/app.js", 200),
    ("/ui/static/app.css", 200), ("/ui/models/nope/1", 404), ("/metrics", 200),
])
def test_api_answers_static_files_and_errors_carry_the_headers_too(client: TestClient, path: str, status: int) -> None:
    resp = client.get(path)
    assert resp.status_code == status
    assert_secure(resp)


def test_a_page_without_login_is_covered_as_well(client: TestClient) -> None:
    resp = client.get("/ui/fleet", cookies={"edgefleet_token": ""}, headers={"Authorization": ""})
    assert resp.status_code == 401
    assert_secure(resp)


def test_swagger_ui_allows_exactly_its_inline_script_by_hash(client: TestClient) -> None:
    resp = client.get("/api/v1/docs")
    assert resp.status_code == 200
    csp = resp.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    inline = re.findall(r"<script>(.*?)</script>", resp.text, re.S)
    assert inline, "Swagger UI has its bootstrap script inline"
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp


def test_a_response_keeps_its_own_policy() -> None:
    headers = with_security_headers([(b"content-security-policy", REPORT_CSP.encode())], CSP)
    assert [v for k, v in headers if k == b"content-security-policy"] == [REPORT_CSP.encode()]
    assert (b"x-content-type-options", b"nosniff") in headers


INLINE = [
    (re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I), "inline event handler"),
    (re.compile(r"<[a-z][^>]*\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"<script(?![^>]*\ssrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I), "inline script"),
    (re.compile(r"\|\s*safe\b"), "|safe"),
    (re.compile(r"javascript:", re.I), "javascript: URL"),
]


@pytest.mark.parametrize("template", sorted(p.name for p in (HERE / "templates").glob("*.html")))
def test_templates_hold_nothing_the_policy_would_block(template: str) -> None:
    text = (Path(HERE) / "templates" / template).read_text()
    found = [f"{what}: {m.group(0)[:60]}" for pattern, what in INLINE for m in pattern.finditer(text)]
    assert found == []
