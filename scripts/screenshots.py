"""Screenshots of the UI for the README: ``python scripts/screenshots.py [OUT_DIR]``.

Starts a controller on loopback with the realistic seeded fleet of tests/web/fleet_data.py
(real ingest path, the demo's real digit models), logs in with headless Chromium and
writes login.png, fleet.png, model.png and tokens.png (default: docs/screenshots/).
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
    finally:
        server.stop()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
