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
    assert page.locator("#corrected-label").count() == 1  # operators may label: the picker is theirs too
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


# ----- the correct label (issue 17, item 6) -----


def _label_of(live, event_id: str) -> dict | None:  # type: ignore[no-untyped-def]
    """The capture's label as the API reports it (None: unlabelled)."""
    r = httpx.get(f"{live.url}/api/v1/review/queue", params={"limit": 1000},
                  headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.status_code == 200, r.text
    [item] = [i for i in r.json()["items"] if i["event_id"] == event_id]
    return item["label"]


def _manifest_labels(live, ref: str) -> list[str]:  # type: ignore[no-untyped-def]
    name, version = ref.split(":")
    r = httpx.get(f"{live.url}/api/v1/models/{name}/versions/{version}",
                  headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.status_code == 200, r.text
    return list(r.json()["labels"])


def test_reviewer_picks_the_correct_label_it_is_stored_and_shown_after_reload(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    eid = captured[0]  # cam-dock-01: control 8, candidate 3
    control, candidate = live.fleet.control.label, live.fleet.candidate.label
    known = _manifest_labels(live, control) + [x for x in _manifest_labels(live, candidate)
                                              if x not in _manifest_labels(live, control)]
    assert "9" in known
    open_as(page, live, "reviewer", "/ui/review?show=all&device=cam-dock-01")
    assert page.locator("#review").get_attribute("data-event") == eid
    # the picker offers exactly the manifests' labels plus (none)
    options = page.eval_on_selector_all("#corrected-label option", "os => os.map(o => [o.value, o.textContent])")
    assert options == [["", "(none)"]] + [[x, x] for x in known]
    page.select_option("#corrected-label", "9")
    page.keyboard.press("3")  # both wrong: the picker gave focus back, so the verdict key works
    page.wait_for_function("() => document.getElementById('review').dataset.labelled === '1'")
    lab = _label_of(live, eid)
    assert lab is not None and lab["verdict"] == "both_wrong" and lab["corrected_label"] == "9"
    assert lab["training_label"] == "9" and lab["reviewer"] == "reviewer-user"

    page.reload()
    assert page.locator("#review").get_attribute("data-event") == eid
    assert page.locator("#corrected-label").input_value() == "9"
    assert "correct label 9" in page.locator("#current-label").inner_text()
    assert page.locator(f"#queue tr[data-event='{eid}'] .corrected-cell").inner_text() == "9"
    # picking (none) with a new verdict clears it
    page.select_option("#corrected-label", "")
    page.keyboard.press("4")
    page.wait_for_function("() => document.getElementById('review').dataset.labelled === '1'")
    lab = _label_of(live, eid)
    assert lab["verdict"] == "unclear" and lab["corrected_label"] is None
    # the queue API names the labels per model, as the page uses them
    r = httpx.get(f"{live.url}/api/v1/review/queue", params={"device": "cam-dock-01"},
                  headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.json()["labels"] == {control: _manifest_labels(live, control), candidate: _manifest_labels(live, candidate)}


def test_a_label_outside_the_manifests_is_refused_with_a_clear_error_and_nothing_changes(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    eid = captured[1]  # cam-dock-02: control 8, candidate 3
    before = _label_of(live, eid)
    open_as(page, live, "reviewer", "/ui/review?show=all&device=cam-dock-02")
    assert page.locator("#review").get_attribute("data-event") == eid
    # a tampered page: an option the manifests do not have, sent with the verdict
    page.evaluate("() => document.getElementById('corrected-label').add(new Option('cat', 'cat'))")
    page.select_option("#corrected-label", "cat")
    page.keyboard.press("3")
    flash = page.locator("#flash")
    page.wait_for_function("() => document.getElementById('flash').textContent.includes('Label not saved (HTTP 400)')")
    assert flash.is_visible() and "error" in (flash.get_attribute("class") or "")
    assert "label 'cat' is not a class of these models; known labels: 0, 1" in flash.inner_text()
    assert page.locator("#review").get_attribute("data-event") == eid  # back on the refused capture
    assert _label_of(live, eid) == before
    # a label the verdict contradicts: control_right while the control said 8
    page.select_option("#corrected-label", "3")
    page.keyboard.press("1")
    page.wait_for_function("() => document.getElementById('flash').textContent.includes('use both_wrong')")
    assert _label_of(live, eid) == before
    # forged POSTs through the page's own authenticated path, CSRF header included
    for bad in ("cat", "<script>window.__pwned=1</script>", "8 "):
        res = page.evaluate("""([eid, bad]) => window.edgefleet.send('POST', '/v1/review/' + eid + '/label',
            {verdict: 'both_wrong', corrected_label: bad}).then(r => [r.status, r.data.code])""", [eid, bad])
        assert res == [400, "E_BAD_REQUEST"], (bad, res)
    res = page.evaluate("""(eid) => window.edgefleet.send('POST', '/v1/review/' + eid + '/label',
        {verdict: 'both_wrong', corrected_label: 'x'.repeat(129)}).then(r => r.status)""", eid)
    assert res == 422  # the schema's bound
    assert _label_of(live, eid) == before
    assert page.evaluate("() => window.__pwned") is None


def test_a_forged_post_without_the_csrf_header_is_refused_and_nothing_changes(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    eid = captured[1]
    before = _label_of(live, eid)
    open_as(page, live, "reviewer", "/ui/review?show=all&device=cam-dock-02")
    # the browser sends the cookie, but neither request carries X-Edgefleet-Request (a
    # cross-site form could send the text/plain one; SameSite=Strict keeps the cookie off it too)
    statuses = page.evaluate("""async (eid) => {
        const body = JSON.stringify({verdict: 'both_wrong', corrected_label: '9'});
        const url = '/ui/api/v1/review/' + encodeURIComponent(eid) + '/label';
        const a = await fetch(url, {method: 'POST', credentials: 'same-origin',
                                    headers: {'Content-Type': 'application/json'}, body});
        const b = await fetch(url, {method: 'POST', credentials: 'same-origin',
                                    headers: {'Content-Type': 'text/plain'}, body});
        return [a.status, b.status];
    }""", eid)
    assert statuses == [403, 403]
    r = httpx.post(f"{live.url}/ui/api/v1/review/{eid}/label", json={"verdict": "both_wrong", "corrected_label": "9"},
                   cookies={"edgefleet_token": live.tokens["reviewer"]})
    assert r.status_code == 403 and "x-edgefleet-request" in r.text
    assert _label_of(live, eid) == before


def test_a_viewer_gets_no_label_picker_and_its_post_with_a_label_is_refused(live, captured, page) -> None:  # type: ignore[no-untyped-def]
    eid = captured[0]
    before = _label_of(live, eid)
    open_as(page, live, "viewer", "/ui/review?show=all&device=cam-dock-01")
    assert page.locator("#review").get_attribute("data-event") == eid
    assert page.locator("#corrected-label").count() == 0 and page.locator("[data-verdict]").count() == 0
    status = page.evaluate("""(eid) => window.edgefleet.send('POST', '/v1/review/' + eid + '/label',
        {verdict: 'both_wrong', corrected_label: '9'}).then(r => r.status)""", eid)
    assert status == 403
    r = httpx.post(f"{live.url}/api/v1/review/{eid}/label", json={"verdict": "both_wrong", "corrected_label": "9"},
                   headers={"Authorization": f"Bearer {live.tokens['viewer']}"})
    assert r.status_code == 403
    assert _label_of(live, eid) == before
