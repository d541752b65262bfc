"""Screenshots of the UI for the README: ``python scripts/screenshots.py [OUT_DIR]``.

Starts a controller on loopback with the realistic seeded fleet of tests/web/fleet_data.py
(real ingest path, the demo's real digit models), logs in with headless Chromium and
writes login.png, fleet.png, model.png and tokens.png (default: docs/screenshots/); then
captures uploaded through the real device uploader and a rollout advanced by one reconcile
pass give review.png, confusion.png and rollouts.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.web.browser import launch_chromium, login  # noqa: E402
from tests.web.conftest import start_live  # noqa: E402

from edgefleet.cloud.demo.train import train_digit_models  # noqa: E402


def review_pages(page, ui, work: Path, out: Path) -> None:  # type: ignore[no-untyped-def]
    """review.png, confusion.png, rollouts.png (web/pages/review.py, confusion.py, rollouts.py)."""
    import time

    from tests.review.seed import Capture, seed_captures

    from edgefleet.cloud.rollout import service
    from edgefleet.cloud.rollout.service import RolloutCreate

    caps = [Capture(d, 8, "8", c, age_s=age) for d, c, age in (
        ("cam-dock-01", "3", 90), ("cam-dock-02", "3", 75), ("cam-dock-01", "1", 60), ("cam-gate-01", "3", 45))]
    caps.append(Capture("cam-gate-02", 4, "4", "4", trigger="low_confidence", control_score=0.44,
                        candidate_score=0.41, age_s=30))
    ids = seed_captures(ui.controller, ui.url, ui.fleet.control, ui.fleet.candidate, caps, work / "captures")
    from edgefleet.cloud import review

    with ui.controller.session() as s:
        review.label(s, ids[0], "control_right", note="clearly an 8", reviewer="reviewer-user")
        row = service.start_rollout(s, RolloutCreate(
            model="digits:2.0", slot="control", select="tag:site=dock|gate|lab", waves="20,50,100", soak="10m",
            gates=["failure<=0.02", "latency_p99_ratio<=1.2", "agreement>=0.95"]), time.time(), actor="operator-user")
    ui.controller.reconcile_once()
    login(page, ui.url, ui.tokens["reviewer"], "/ui/review")
    page.goto(f"{ui.url}/ui/review?pair=digits:1.0:digits:2.0&class=8")
    page.wait_for_function("() => document.getElementById('clip').currentTime > 0.3", timeout=15000)
    page.screenshot(path=str(out / "review.png"), full_page=True)
    page.goto(f"{ui.url}/ui/confusion")
    page.screenshot(path=str(out / "confusion.png"), full_page=True)
    login(page, ui.url, ui.tokens["operator"], f"/ui/rollouts/{row.id}")
    page.screenshot(path=str(out / "rollouts.png"), full_page=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgefleet-shots-"))
    models = train_digit_models(work / "models")
    ui, server = start_live(work / "controller", models)
    try:
        with launch_chromium() as browser:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{ui.url}/ui/fleet")
            page.fill("#token", "efk_…")
            page.screenshot(path=str(out / "login.png"))
            login(page, ui.url, ui.tokens["operator"])
            page.screenshot(path=str(out / "fleet.png"), full_page=True)
            page.goto(f"{ui.url}/ui/models/digits/1.0")
            page.frame_locator("iframe.report").locator("body").wait_for(timeout=30000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "model.png"), full_page=True)
            login(page, ui.url, ui.tokens["admin"], "/ui/tokens")
            page.screenshot(path=str(out / "tokens.png"), full_page=True)
            review_pages(page, ui, work, out)
    finally:
        server.stop()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
