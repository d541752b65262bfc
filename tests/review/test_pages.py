"""The review, confusion and rollouts pages as served HTML: what each role is offered."""

from __future__ import annotations

import httpx
import pytest


def _get(server, role: str, path: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(server.url + path, headers=server.headers(role))


@pytest.mark.parametrize(("role", "buttons"), [("viewer", False), ("reviewer", True), ("admin", True)])
def test_verdict_buttons_and_note_only_for_reviewers_and_up(server, role, buttons) -> None:  # type: ignore[no-untyped-def]
    html = _get(server, role, "/ui/review?show=all").text
    assert ('data-verdict="control_right"' in html) is buttons
    assert ('id="note"' in html) is buttons
    assert 'data-can-label="' + ("true" if buttons else "false") + '"' in html
    assert all(eid in html for eid in server.event_ids)  # the queue's captures are on the page


def test_confusion_page_links_each_cell_to_the_filtered_queue(server) -> None:  # type: ignore[no-untyped-def]
    html = _get(server, "viewer", "/ui/confusion").text
    assert "/ui/review?pair=digits%3A1.0%3Adigits%3A2.0&amp;control_label=8&amp;candidate_label=3" in html


def test_rollouts_page_without_rollouts_says_how_to_start_one(server) -> None:  # type: ignore[no-untyped-def]
    r = _get(server, "operator", "/ui/rollouts")
    assert r.status_code == 200 and "fleet rollout start" in r.text
    assert _get(server, "viewer", "/ui/rollouts/r-missing").status_code == 404


@pytest.mark.parametrize("path", ["/ui/review?pair=bad", "/ui/review?since=yesterday", "/ui/confusion?pair=bad"])
def test_malformed_filters_are_400_with_the_reason(server, path) -> None:  # type: ignore[no-untyped-def]
    r = _get(server, "viewer", path)
    assert r.status_code == 400 and r.json()["detail"]
