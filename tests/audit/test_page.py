"""/ui/audit: admins see the log with filters and can verify it; nobody else sees it;
names an operator chose (token names, targets) are shown escaped; the page has no script
of its own (strict CSP)."""

from __future__ import annotations

import re

import httpx

from .conftest import sql


def _page(stack, token: str, query: str = "") -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(stack.url + "/ui/audit" + query, cookies={"edgefleet_token": token})


def test_admins_see_the_log_filtered_and_verified_and_names_escaped(stack) -> None:  # type: ignore[no-untyped-def]
    stack.client.create_token("<script>alert(1)</script>", "viewer")
    stack.client.create_token("plain-bot", "viewer")
    stack.client.change_capture_settings({"max_per_minute": 5})
    r = _page(stack, stack.token)
    assert r.status_code == 200
    assert len(re.findall(r'<tr data-seq="\d+">', r.text)) == 3
    assert "<script>alert(1)</script>" not in r.text
    assert "\\u003cscript\\u003ealert(1)" in r.text or "&lt;script&gt;alert(1)" in r.text
    assert re.findall(r"<script[^>]*>", r.text) == ['<script src="/ui/static/app.js">']  # nothing inline
    assert re.search(r"<[^>]*\son[a-z]+\s*=", r.text) is None  # no inline event handlers

    r = _page(stack, stack.token, "?action=capture.")
    assert len(re.findall(r'<tr data-seq="\d+">', r.text)) == 1 and "capture.set" in r.text
    r = _page(stack, stack.token, "?actor=nobody")
    assert "no entries" in r.text

    r = _page(stack, stack.token, "?verify=1")
    assert 'id="verify-result"' in r.text and "chain intact" in r.text
    sql(stack.controller.engine, "UPDATE audit_entry SET actor = 'x' WHERE seq = 2")
    r = _page(stack, stack.token, "?verify=1")
    assert "chain broken" in r.text and "entry 2: <b>edited</b>" in r.text


def test_other_roles_get_the_forbidden_page_and_bad_times_a_clear_error(stack) -> None:  # type: ignore[no-untyped-def]
    for role in ("viewer", "reviewer", "operator"):
        token = stack.client.create_token(f"{role}-user", role)["token"]
        r = _page(stack, token)
        assert r.status_code == 403 and "admin role" in r.text
    r = _page(stack, stack.token, "?since=yesterday")
    assert r.status_code == 400 and "ISO 8601" in r.text
