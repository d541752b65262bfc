"""In headless Chromium: a reviewer works through the queue with the keyboard, and the
export holds the label; a viewer sees no verdict buttons and the API refuses them.

Captures are real: VP8 clips of the synthetic digits camera uploaded through the device's
outbox and uploader to the controller's uploads endpoint, events through the controller's
MQTT event handler (tests/review/seed.py), on top of the seeded fleet of fleet_data.py.
"""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest

from tests.review.seed import Capture, seed_captures

from .browser import chromium_path, login

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium at /usr/bin/chromium")]
PAIR = "digits:1.0:digits:2.0"


@pytest.fixture(scope="module")
def captured(live, tmp_path_factory):  # type: ignore[no-untyped-def]
    caps = [Capture("cam-dock-01", 8, "8", "3", age_s=40), Capture("cam-dock-02", 8, "8", "3", age_s=30),
            Capture("cam-gate-01", 8, "8", "1", age_s=20),
            Capture("cam-gate-02", 4, "4", "4", trigger="low_confidence", control_score=0.42, candidate_score=0.4, age_s=10)]
    return seed_captures(live.controller, live.url, live.fleet.control, live.fleet.candidate, caps,
                         tmp_path_factory.mktemp("captures"))



def open_as(page, live, role: str, path: str) -> None:  # type: ignore[no-untyped-def]
    login(page, live.url, live.tokens[role])  # login's next= cannot carry a query with '&'
    page.goto(live.url + path)


def test_reviewer_plays_a_clip_labels_it_with_the_keyboard_and_the_export_has_the_label(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    open_as(page, live, "reviewer", f"/ui/review?pair={PAIR}&class=8")
    root = page.locator("#review")
    first = root.get_attribute("data-event")
    assert first in captured
    # the clip really plays: decoded frames, time advancing; space pauses and plays again
    page.wait_for_function("() => { const v = document.getElementById('clip'); return v.videoWidth > 0 && v.currentTime > 0.2; }",
                           timeout=15000)
    page.keyboard.press("Space")
    assert page.evaluate("document.getElementById('clip').paused") is True
    page.keyboard.press("Space")
    page.wait_for_function("() => !document.getElementById('clip').paused")
    assert page.locator("#out-control .big").inner_text() == "8"
    assert page.locator("#out-candidate .big").inner_text() in ("3", "1")
    # the next item's clip has been fetched ahead
    page.wait_for_function("() => window.edgefleetReview.items().length > 1")
    page.fill("#note", "an eight, the candidate misses it")
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    # the next capture shows at once, from the prefetched blob
    assert root.get_attribute("data-event") != first
    page.wait_for_function("() => document.getElementById('clip').src.startsWith('blob:')")
    page.wait_for_function("() => document.getElementById('review').dataset.labelled === '1'")
    assert page.locator(f"#queue tr[data-event='{first}'] .verdict-cell").inner_text() == "control_right"
    assert page.locator("#note").input_value() == ""

    r = httpx.get(f"{live.url}/api/v1/review/export", params={"pair": PAIR},
                  headers={"Authorization": f"Bearer {live.tokens['reviewer']}"})
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    rows = {x["event_id"]: x for x in map(json.loads, zf.read("labels.jsonl").decode().splitlines())}
    row = rows[first]
    assert row["verdict"] == "control_right" and row["note"] == "an eight, the candidate misses it"
    assert row["reviewer"] == "reviewer-user" and row["control"]["label"] == "8"
    assert zf.read(row["clip"])[:4] == b"\x1a\x45\xdf\xa3"


def test_keys_c_k_b_u_label_and_n_skips(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    open_as(page, live, "operator", "/ui/review?show=unlabelled")
    root = page.locator("#review")
    a = root.get_attribute("data-event")
    page.keyboard.press("n")
    b = root.get_attribute("data-event")
    assert a != b
    page.keyboard.press("u")
    page.wait_for_function("() => document.getElementById('review').dataset.labelled === '1'")
    with live.controller.session() as s:
        from edgefleet.cloud import review

        [item] = [i for i in review.queue(s, review.QueueFilter(labelled=True)) if i.event.event_id == b]
        assert item.label is not None and item.label.verdict == "unclear" and item.label.reviewer == "operator-user"


def test_viewer_sees_the_queue_without_verdict_buttons_and_the_api_answers_403(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    open_as(page, live, "viewer", "/ui/review?show=all")
    assert page.locator("#review").get_attribute("data-event") in captured
    assert page.locator("[data-verdict]").count() == 0 and page.locator("#note").count() == 0
    page.keyboard.press("1")  # no request is sent; nothing changes
    assert page.evaluate("document.getElementById('review').dataset.labelled") is None
    eid = captured[0]
    status = page.evaluate("""(eid) => window.edgefleet.send('POST', '/v1/review/' + eid + '/label',
        {verdict: 'control_right'}).then(r => r.status)""", eid)
    assert status == 403
    r = httpx.post(f"{live.url}/api/v1/review/{eid}/label", json={"verdict": "unclear"},
                   headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.status_code == 403
    r = httpx.get(f"{live.url}/api/v1/review/export", headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.status_code == 403


def test_confusion_cells_link_into_the_queue_filtered_to_that_cell(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    open_as(page, live, "viewer", "/ui/confusion")
    assert page.locator("#pairs tbody tr").count() >= 1
    assert page.locator("svg.chart").count() == 2
    cell = page.locator("table.confusion td[data-control='8'][data-candidate='3'] a")
    assert int(cell.inner_text().split()[0]) > 0
    cell.click()
    page.wait_for_url("**/ui/review?**control_label=8**")
    assert "candidate_label=3" in page.url
    events = page.evaluate("window.edgefleetReview.items().map(i => [i.control.label, i.candidate.label])")
    assert events and all(e == ["8", "3"] for e in events)
