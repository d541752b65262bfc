"""The fleet page and the rollout member list page like the API: counts first, one page of
devices with next/prev links that carry the filters, device-supplied strings as text.
One test in headless Chromium (skipped without /usr/bin/chromium)."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest
from sqlmodel import Session

from edgefleet.cloud.api.routes.rollouts import member_page
from edgefleet.cloud.devices.cursor import BadCursor
from edgefleet.cloud.tables import Device

from ..web.browser import chromium_path, launch_chromium, login

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'
PLANTED = "zz-planted"  # sorts after the seeded dev-… ids: on the last page


@pytest.fixture(scope="module")
def planted(views):  # type: ignore[no-untyped-def]
    with Session(views.controller.engine) as s:
        s.add(Device(id=PLANTED, hardware_id=IMG, tags={"site": SCRIPT}, online=True,
                     stale_since=None, reported={"slots": {"control": {"installed": {"name": SCRIPT, "version": IMG}}}}))
        s.commit()
    return views


def _get(views, path: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.get(views.url + path, headers={"Authorization": f"Bearer {views.tokens['viewer']}"}, timeout=60)


def _next_href(html: str) -> str | None:
    m = re.search(r'id="page-next" rel="next" href="([^"]+)"', html)
    return unescape(m.group(1)) if m else None


def test_the_fleet_page_counts_first_and_pages_with_the_filters_in_its_links(planted) -> None:  # type: ignore[no-untyped-def]
    first = _get(planted, "/ui/fleet?state=offline&limit=20")
    assert first.status_code == 200
    assert 'data-count="offline"' in first.text and 'id="profile-counts"' in first.text
    assert first.text.count("<tr data-device=") == 20
    href = _next_href(first.text)
    assert href and "state=offline" in href and "limit=20" in href and "cursor=" in href
    second = _get(planted, href)
    ids1 = set(re.findall(r'<tr data-device="([^"]+)"', first.text))
    ids2 = set(re.findall(r'<tr data-device="([^"]+)"', second.text))
    assert ids2 and not ids1 & ids2 and 'id="page-prev"' in second.text


def test_an_altered_page_link_shows_the_first_page_with_a_notice(planted) -> None:  # type: ignore[no-untyped-def]
    r = _get(planted, "/ui/fleet?cursor=garbage")
    assert r.status_code == 200 and 'id="pager-notice"' in r.text


def test_device_supplied_strings_are_text_on_the_fleet_page(planted) -> None:  # type: ignore[no-untyped-def]
    r = _get(planted, "/ui/fleet?" + httpx.QueryParams({"tag": f"site={SCRIPT}"}).__str__())
    assert r.status_code == 200 and f'data-device="{PLANTED}"' in r.text
    assert SCRIPT not in r.text and IMG not in r.text  # only escaped forms
    assert "&lt;script&gt;" in r.text


def test_rollout_members_page_in_id_order_with_cursors_bound_to_the_filters() -> None:
    members = [{"device": f"d{i:03d}", "hardware_id": "cpu", "wave": i % 3, "status": "healthy" if i % 2 else "pending",
                "online": True} for i in range(250)]
    seen, cursor = [], None
    while True:
        page = member_page(members, "ro_1", limit=40, cursor=cursor)
        seen += [m.device for m in page.items]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == sorted(m["device"] for m in members) and page.total == 250
    healthy = member_page(members, "ro_1", limit=10, cursor=None, status="healthy", wave=1)
    assert all(m.status == "healthy" and m.wave == 1 for m in healthy.items)
    with pytest.raises(BadCursor):  # a cursor of one filter is refused under another (or another rollout)
        member_page(members, "ro_1", limit=10, cursor=healthy.next_cursor)
    with pytest.raises(BadCursor):
        member_page(members, "ro_2", limit=10, cursor=healthy.next_cursor, status="healthy", wave=1)
    back = member_page(members, "ro_1", limit=40, cursor=member_page(members, "ro_1", limit=40, cursor=None).next_cursor)
    assert member_page(members, "ro_1", limit=40, cursor=back.prev_cursor).items[0].device == "d000"


@pytest.mark.browser
@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium at /usr/bin/chromium")
def test_in_chromium_the_fleet_page_pages_shows_counts_and_runs_nothing_planted(planted) -> None:  # type: ignore[no-untyped-def]
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(page, planted.url, planted.tokens["viewer"])
        total = int(page.locator('[data-count="total"] b').inner_text().replace(",", ""))
        assert total >= 231  # the seeded fleet and the planted device
        first = page.locator("#devices tbody tr").evaluate_all("rs => rs.map(r => r.dataset.device)")
        assert len(first) == 100 and first == sorted(first)
        page.click("#page-next")
        page.wait_for_url("**cursor=**")
        second = page.locator("#devices tbody tr").evaluate_all("rs => rs.map(r => r.dataset.device)")
        assert second and second[0] > first[-1]
        page.click("#page-prev")
        page.wait_for_load_state()
        assert page.locator("#devices tbody tr").evaluate_all("rs => rs.map(r => r.dataset.device)") == first
        page.select_option("#filter-state", "online")
        page.click("form.filters button[type=submit]")
        page.wait_for_url("**state=online**")
        while page.locator("#page-next").count():  # to the last page, where the planted device is
            page.click("#page-next")
            page.wait_for_load_state()
        row = page.locator(f"tr[data-device={PLANTED}]")
        assert SCRIPT in row.inner_text() and IMG in row.inner_text()  # shown as text
        assert page.evaluate("() => window.__pwned") is None and dialogs == []
        context.close()
