"""In headless Chromium: the device page shows the inventory a device sent — as text.

Script-bearing strings are planted in a device's ``reported`` (its inventory, an error
text, its tags) straight through ``ingest.apply_reported`` (past the signature check: what
is tested is escaping and the CSP, the second layer). The page must show them literally
and run none of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.devices import fleet, ingest
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.web.security import CSP
from edgefleet.protocols import Phase, Reported, SlotReport
from edgefleet.protocols.messages import Inventory

from ..web.browser import chromium_path, launch_chromium, login
from ..web.test_xss_browser import RECORDER

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium at /usr/bin/chromium")]

SCRIPT = "</script><script>window.__pwned=1</script>"
IMG = '"><img src=x onerror="window.__pwned=1">'
DEVICE = "cam-xss"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, str, Controller]]:
    settings = load_settings(tmp_path / "c", env={}, http_port=free_port())
    controller = Controller(settings)
    controller.migrate()
    with controller.session() as s:
        token = create_token(s, "admin-user", "admin")[1]
        fleet.enrol(s, DEVICE, "cpu-x86_64", {"site": "depot-7"})
        ingest.apply_reported(s, Reported(
            device_id=DEVICE, generation=0, hardware_id="cpu-x86_64", agent_version="0.1.0",
            slots={"control": SlotReport(phase=Phase.FAILED, error_code="E_SELFTEST", error=IMG)},
            inventory=Inventory(agent_version=IMG, os=SCRIPT, kernel=IMG, l4t="36.3.0", jetpack="6.0",
                                python="3.11.2", tensorrt=SCRIPT, onnxruntime="1.18.0",
                                providers=["CPUExecutionProvider", SCRIPT], disk_total_bytes=64 * 2**30,
                                disk_free_bytes=10 * 2**30, memory_total_bytes=8 * 2**30,
                                memory_available_bytes=3 * 2**30)))
    server = UvicornThread(create_app(controller), settings.http_host, settings.http_port)
    server.start()
    yield settings.base_url, token, controller
    server.stop()
    controller.engine.dispose()


def test_inventory_is_shown_and_nothing_a_device_sent_runs(live) -> None:  # type: ignore[no-untyped-def]
    url, token, _ = live
    with launch_chromium() as browser:
        context = browser.new_context()
        context.add_init_script(RECORDER)  # CSP violations on our own page would mean it needs inline code
        page = context.new_page()
        dialogs: list[Any] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(page, url, token)
        page.click(f"a[href='/ui/devices/{DEVICE}']")  # linked from the fleet page
        page.wait_for_url(f"{url}/ui/devices/{DEVICE}")
        response = page.goto(f"{url}/ui/devices/{DEVICE}")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == CSP
        inventory = page.inner_text("#inventory")
        assert SCRIPT in inventory and IMG in inventory  # shown, as text
        assert "36.3.0 / 6.0" in inventory and "1.18.0" in inventory and "CPUExecutionProvider" in inventory
        assert "10.0 GiB free of 64.0 GiB" in inventory and "3.0 GiB available of 8.0 GiB" in inventory
        assert IMG in page.inner_text("#history")  # the phase change with its error text
        assert page.evaluate("() => window.__pwned") is None and dialogs == []
        assert page.evaluate("() => window.__violations") == []
        assert page.evaluate("() => document.querySelectorAll('img, #inventory script, #history script').length") == 0
        context.close()


def test_device_page_needs_login_and_names_unknown_devices(live) -> None:  # type: ignore[no-untyped-def]
    import httpx

    url, token, _ = live
    assert httpx.get(f"{url}/ui/devices/{DEVICE}").status_code == 401
    r = httpx.get(f"{url}/ui/devices/nobody", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404
