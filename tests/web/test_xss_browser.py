"""In headless Chromium: nothing a device sends can run in an admin's browser.

A controller gets script-bearing strings planted straight into its database (through the
stores, past every check at the door, the label check in ``cloud/devices/labels.py`` included), so
what is tested here is the second layer, escaping and the Content-Security-Policy:
device tags, hardware id, agent version, slot error code and text, telemetry class names
(class counts, shadow confusion and per-class disagreements), capture event labels,
trigger and id, a review note, manifest class labels (the review page's correct-label picker)
and a stored corrected label, a rollout's reason and a token name. Then every page is
visited as admin and must not have run any of it: ``window.__pwned`` stays unset in every
frame, no dialog opens, no element carries an ``on…`` attribute or a ``javascript:`` link,
the page's CSP header is the strict one, and the browser reports no CSP violation on our
own pages (so they work without inline scripts or styles). The Evidently report iframe is
sandboxed and cannot reach ``parent.document``, the cookie or the API.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from edgefleet.cloud import catalog, shadow_index
from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.devices import fleet, ingest, telemetry_store
from edgefleet.cloud.rollout import service
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.web.security import CSP, REPORT_CSP
from edgefleet.protocols import (
    Event,
    LatencyStats,
    ModelOutput,
    ModelRef,
    Phase,
    Reported,
    ShadowStats,
    SlotReport,
    Status,
    Telemetry,
)

from .browser import chromium_path, login
from .conftest import LiveUI

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium at /usr/bin/chromium")]

SCRIPT = "</script><script>window.__pwned=1</script>"
IMG = '"><img src=x onerror="window.__pwned=1">'
SVG = "<svg onload=window.__pwned=1><script>window.__pwned=1</script></svg>"
JS_URL = "javascript:window.__pwned=1"
ATTR = "' onmouseover='window.__pwned=1' x='"
PAYLOADS = (SCRIPT, IMG, SVG, JS_URL, ATTR)
DEVICE = "cam-evil-01"

# Installed before any page script: records dialogs' and CSP violations in the top page.
RECORDER = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  if (window === window.top) { window.__violations.push(e.violatedDirective + ' ' + e.blockedURI); }
});
"""


def start_poisoned(data_dir: Path, digit_models) -> tuple[LiveUI, UvicornThread]:  # type: ignore[no-untyped-def]
    """A controller whose database holds script-bearing strings in every device-supplied field."""
    settings = load_settings(data_dir, env={}, http_port=free_port())
    c = Controller(settings)
    c.migrate()
    now = datetime.now(timezone.utc)
    with c.session() as s:
        tokens = {role: create_token(s, f"{role}-user", role)[1] for role in ROLES}
        refs = []
        for m in digit_models:
            mv, _ = catalog.push_model(s, c.store, m.path.read_bytes(), name=m.manifest.name,
                                       version=m.manifest.version,
                                       manifest=m.manifest.model_dump(mode="json", by_alias=True))
            refs.append(mv)
        control, candidate = (ModelRef(name=mv.name, version=mv.version, digest=mv.digest) for mv in refs)
        fleet.enrol_device(s, DEVICE, "cpu-x86_64", {"site": "lab"})
        fleet.deploy(s, None, refs[0], "control", [DEVICE])
        fleet.deploy(s, None, refs[1], "shadow", [DEVICE])
        # class labels in the candidate's manifest, past the catalog's door: the review page's
        # correct-label picker offers them, and a reviewer may then store one
        refs[1].manifest = {**refs[1].manifest, "labels": [*refs[1].manifest.get("labels", []), SCRIPT, IMG]}
        s.add(refs[1])
        ingest.apply_status(s, Status(device_id=DEVICE, online=True, agent_version=SVG, hardware_id=IMG))
        device = fleet.get_device(s, DEVICE)
        ingest.apply_reported(s, Reported(
            device_id=DEVICE, generation=device.desired_generation, hardware_id="cpu-x86_64", agent_version=SVG,
            slots={"control": SlotReport(installed=control, phase=Phase.FAILED, error_code=IMG[:64],
                                         error=" ".join(PAYLOADS)),
                   "shadow": SlotReport(installed=candidate, phase=Phase.HEALTHY)}))
        device = fleet.get_device(s, DEVICE)
        device.tags = {"site": SCRIPT, IMG: JS_URL, "svg": SVG, "q": ATTR}
        device.hardware_id = IMG
        device.agent_version = SVG
        s.add(device)
        s.commit()
        # telemetry straight into the stores (past the label check), enough for both drift windows
        for k in range(40):
            end = now - timedelta(seconds=10 * (39 - k))
            shifted = k >= 30
            msg = Telemetry(
                device_id=DEVICE, period_start=end - timedelta(seconds=10), period_end=end, control=control,
                frames=150, fps=15.0, class_counts={SCRIPT: 50, IMG: 10 + 30 * shifted, SVG: 30, "8": 60 - 30 * shifted},
                confidence_histogram=[0, 0, 0, 0, 0, 5, 5, 10 + 20 * shifted, 30, 100 - 20 * shifted],
                latency_ms=LatencyStats(p50=1.0, p95=2.0, p99=3.0, mean=1.2, max=4.0),
                shadow=ShadowStats(candidate=candidate, frames=150, disagreements=30, agreement=0.8,
                                   per_class_disagreements={SCRIPT: 10, IMG: 20},
                                   confusion={SCRIPT: {IMG: 10, SCRIPT: 40}, IMG: {SVG: 20, "8": 20}}),
                hardware={"temp_max_c": 50.0, SCRIPT: IMG})
            ingest.apply_telemetry(s, msg)
            telemetry_store.record_telemetry(s, msg)
            shadow_index.record_pair_stats(s, msg)
        events = []
        for control_label, candidate_label, trigger in ((SCRIPT, IMG, SCRIPT[:32]), (SVG, ATTR, IMG[:32]),
                                                        (JS_URL, SCRIPT, "disagreement")):
            eid = (IMG + uuid.uuid4().hex)[:64]
            shadow_index.record_event(s, Event(
                device_id=DEVICE, event_id=eid, trigger=trigger, ts=now,
                control=ModelOutput(model=control, label=control_label, score=0.9, scores=[0.9, 0.1]),
                candidate=ModelOutput(model=candidate, label=candidate_label, score=0.5, scores=[0.5, 0.5]),
                clip_id=SCRIPT[:64]), via="mqtt")
            events.append(eid)
        rollout = service.start_rollout(s, service.RolloutCreate(model=candidate.label, slot="control",
                                                                 select="all", waves="100", soak="1h"), time.time())
        rollout_id = rollout.id
    c.reconcile_once()
    with c.session() as s:
        service.run_command(s, rollout_id, "pause", time.time(), reason=" ".join(PAYLOADS), actor=SVG)
    server = UvicornThread(create_app(c), settings.http_host, settings.http_port)
    server.start()
    ui = LiveUI(settings.base_url, c, tokens, None)  # type: ignore[arg-type]
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    r = httpx.post(f"{ui.url}/api/v1/review/{events[0]}/label", headers=admin,
                   json={"verdict": "both_wrong", "note": " ".join(PAYLOADS), "device_id": DEVICE,
                         "corrected_label": SCRIPT})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{ui.url}/api/v1/tokens", headers=admin, json={"name": IMG, "role": "viewer"})
    assert r.status_code in (200, 201), r.text
    ui.ids = {"rollout": rollout_id, "pair": f"{control.label}:{candidate.label}"}  # type: ignore[attr-defined]
    return ui, server


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory, digit_models) -> Iterator[tuple[LiveUI, dict[str, str]]]:  # type: ignore[no-untyped-def]
    ui, server = start_poisoned(tmp_path_factory.mktemp("xss"), digit_models)
    try:
        yield ui, ui.ids  # type: ignore[attr-defined]
    finally:
        server.stop()
        ui.controller.engine.dispose()


@pytest.fixture
def admin_page(poisoned, browser) -> Iterator[tuple[Any, list[str]]]:  # type: ignore[no-untyped-def]
    ui, _ = poisoned
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.add_init_script(RECORDER)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, ui.url, ui.tokens["admin"])
    yield page, dialogs
    context.close()


def pages(ids: dict[str, str]) -> list[str]:
    pair = ids["pair"]
    return ["/ui/fleet", "/ui/fleet?" + urlencode({"tag": f"site={SCRIPT}"}), "/ui/rollouts",
            f"/ui/rollouts/{ids['rollout']}", "/ui/review?show=all", f"/ui/review?show=all&device={DEVICE}",
            "/ui/confusion", f"/ui/confusion?pair={pair}", "/ui/models", "/ui/models/digits/1.0",
            "/ui/models/digits/2.0", "/ui/tokens", "/ui/audit", f"/ui/login?next=/ui/{IMG}"]


def assert_nothing_ran(page: Any, dialogs: list[str]) -> None:
    for frame in page.frames:
        assert frame.evaluate("() => window.__pwned") is None, frame.url
    assert dialogs == []
    found = page.evaluate("""() => {
        const out = {on: [], js: [], scripts: []};
        for (const el of document.querySelectorAll('*')) {
            for (const a of el.attributes) {
                if (a.name.startsWith('on')) { out.on.push(el.tagName + ' ' + a.name); }
                if (/^\\s*javascript:/i.test(a.value) && ['href', 'src', 'action', 'formaction', 'xlink:href'].includes(a.name)) {
                    out.js.push(el.tagName + ' ' + a.name);
                }
            }
        }
        for (const s of document.querySelectorAll('script')) {
            if (!(s.src && new URL(s.src).pathname.startsWith('/ui/static/')) && s.type !== 'application/json') {
                out.scripts.push(s.outerHTML.slice(0, 80));
            }
        }
        out.img = Array.from(document.querySelectorAll('img')).map(i => i.outerHTML.slice(0, 80));
        return out;
    }""")
    assert found == {"on": [], "js": [], "scripts": [], "img": []}
    assert page.evaluate("() => window.__violations") == []


def test_planted_scripts_never_run_on_any_page_and_every_page_has_the_strict_csp(poisoned, admin_page) -> None:  # type: ignore[no-untyped-def]
    ui, ids = poisoned
    page, dialogs = admin_page
    for path in pages(ids):
        resp = page.goto(ui.url + path)
        assert resp is not None and resp.status in (200, 401), (path, resp and resp.status)
        assert resp.headers.get("content-security-policy") == CSP, path
        assert "unsafe-inline" not in resp.headers["content-security-policy"]
        assert resp.headers.get("x-content-type-options") == "nosniff"
        page.wait_for_load_state("networkidle")
        page.mouse.move(300, 300)
        page.mouse.move(700, 500)
        assert_nothing_ran(page, dialogs)
    # the payloads are on the pages, as text
    page.goto(ui.url + "/ui/fleet")
    row = page.locator(f"tr[data-device={DEVICE}]")
    assert SCRIPT in row.inner_text() and IMG in row.inner_text()


def test_the_review_player_shows_planted_labels_as_text(poisoned, admin_page) -> None:  # type: ignore[no-untyped-def]
    ui, _ = poisoned
    page, dialogs = admin_page
    page.goto(f"{ui.url}/ui/review?show=all&device={DEVICE}")
    page.wait_for_selector("#queue tbody tr[data-event]")
    rows = page.locator("#queue tbody tr[data-event]")
    for k in range(rows.count()):
        rows.nth(k).click()
        page.wait_for_timeout(100)
    texts = page.locator("#review").inner_text() + page.locator("#queue").inner_text()
    assert SCRIPT in texts or SVG in texts or JS_URL in texts
    # the planted manifest labels are options as text, and the stored corrected label shows as text
    options = page.eval_on_selector_all("#corrected-label option", "os => os.map(o => o.textContent)")
    assert SCRIPT in options and IMG in options
    assert page.locator("#corrected-label option").evaluate_all("os => os.every(o => o.children.length === 0)")
    cells = page.locator("#queue tbody .corrected-cell").all_inner_texts()
    assert cells.count(SCRIPT) == 1
    page.locator("#queue tbody tr[data-event]").nth(cells.index(SCRIPT)).click()
    assert page.locator("#corrected-label").input_value() == SCRIPT
    assert "correct label " + SCRIPT in page.locator("#current-label").inner_text()
    page.reload()  # the server-rendered table too
    page.wait_for_selector("#queue tbody tr[data-event]")
    assert SCRIPT in page.locator("#queue tbody .corrected-cell").all_inner_texts()
    assert_nothing_ran(page, dialogs)


def test_the_drift_report_runs_sandboxed_and_cannot_reach_the_page_the_cookie_or_the_api(poisoned, admin_page) -> None:  # type: ignore[no-untyped-def]
    ui, _ = poisoned
    page, dialogs = admin_page
    page.goto(f"{ui.url}/ui/models/digits/1.0")
    iframe = page.locator("iframe.report")
    assert iframe.get_attribute("sandbox") == "allow-scripts"
    page.frame_locator("iframe.report").locator("text=Jensen-Shannon").first.wait_for(timeout=60000)
    frame = next(f for f in page.frames if f.url.endswith("/drift/report"))
    reach = frame.evaluate("""async () => {
        const out = {};
        try { out.parent = String(parent.document.title); } catch (e) { out.parent = 'blocked'; }
        try { out.cookie = String(document.cookie); } catch (e) { out.cookie = 'blocked'; }
        try { const r = await fetch('/ui/api/v1/tokens', {method: 'POST', headers: {'X-Edgefleet-Request': '1'}});
              out.fetch = 'status ' + r.status; } catch (e) { out.fetch = 'blocked'; }
        out.origin = String(window.origin);
        return out;
    }""")
    assert reach == {"parent": "blocked", "cookie": "blocked", "fetch": "blocked", "origin": "null"}
    assert_nothing_ran(page, dialogs)
    r = httpx.get(f"{ui.url}/ui/models/digits/1.0/drift/report", cookies={"edgefleet_token": ui.tokens["viewer"]})
    assert r.headers["content-security-policy"] == REPORT_CSP
    assert SCRIPT not in r.text and IMG not in r.text
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1" in r.text  # the class name, escaped
