"""In headless Chromium: a capture's campaign and context show in review, as text only.

The context is device-supplied: script-bearing values planted in a capture's record must
show as text on the review page and never run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud import shadow_index
from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import Event, ModelOutput
from tests.web.browser import chromium_path, launch_chromium, login

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium at /usr/bin/chromium")]

SCRIPT = "</script><script>window.__pwned=1</script>"
IMG = '"><img src=x onerror="window.__pwned=1">'


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[str, str]]:
    settings = load_settings(tmp_path, env={}, http_port=free_port())
    c = Controller(settings)
    c.migrate()
    with c.session() as s:
        token = create_token(s, "reviewer-user", "reviewer")[1]
        shadow_index.record_event(s, Event(
            device_id="cam-ctx", event_id="ev-ctx-1", trigger="campaign", ts=datetime.now(timezone.utc),
            control=ModelOutput(label="3", score=0.91, scores=[0.91, 0.09]), campaign="left-turns",
            context={"steering_deg": -25, "road": SCRIPT, "note": IMG}))
    server = UvicornThread(create_app(c), settings.http_host, settings.http_port)
    server.start()
    yield settings.base_url, token
    server.stop()
    c.engine.dispose()


def test_review_shows_campaign_and_context_as_text(ui: tuple[str, str]) -> None:
    url, token = ui
    with launch_chromium() as browser:
        page: Any = browser.new_context().new_page()
        login(page, url, token, "/ui/review")
        page.wait_for_selector("#item-meta span")
        meta = page.inner_text("#item-meta")
        assert "left-turns" in meta and "steering_deg=-25" in meta
        assert SCRIPT in meta and IMG in meta  # shown as the text it is
        assert "left-turns" in page.inner_text("#queue")
        assert page.evaluate("window.__pwned") is None
        assert page.evaluate("document.querySelectorAll('#item-meta img, #item-meta script').length") == 0
