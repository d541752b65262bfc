"""The encoded clip plays in Chromium (real headless browser, skipped where none is installed)."""

from __future__ import annotations

import base64
import os
import shutil

import numpy as np
import pytest

from edgefleet.shadow import encode_clip

pytestmark = pytest.mark.browser


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def test_clip_decodes_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium installed")
    frames = []
    for i in range(20):
        f = np.zeros((64, 96, 3), np.uint8)
        f[:, :, 2] = 220  # red in BGR
        f[:, : 4 * i] = (0, 200, 0)
        frames.append(f)
    info = encode_clip(frames, 10.0, tmp_path / "clip")
    src = f"data:{info.mime};base64," + base64.b64encode(info.path.read_bytes()).decode()
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as exc:  # a broken local browser install is not our failure
            pytest.skip(f"Chromium does not start here: {exc}")
        try:
            page = browser.new_page()
            page.set_content("<video id=v muted></video>")
            result = page.evaluate(
                """async (src) => {
                    const v = document.getElementById('v');
                    const can = v.canPlayType('video/webm; codecs="vp8"');
                    v.src = src;
                    await new Promise((ok, bad) => { v.onloadeddata = ok; v.onerror = () => bad(v.error && v.error.code); });
                    v.currentTime = 0.05;
                    await new Promise((ok) => { v.onseeked = ok; });
                    const c = document.createElement('canvas');
                    c.width = v.videoWidth; c.height = v.videoHeight;
                    const ctx = c.getContext('2d');
                    // 'seeked' can fire before the decoded frame is ready to draw: a canvas
                    // drawn then stays transparent. Draw again on later animation frames.
                    let px = null;
                    for (let i = 0; i < 120; i++) {
                        ctx.clearRect(0, 0, c.width, c.height);
                        ctx.drawImage(v, 0, 0);
                        px = ctx.getImageData(c.width - 2, c.height / 2, 1, 1).data;
                        if (px[3] > 0) break;
                        await new Promise((ok) => requestAnimationFrame(ok));
                    }
                    return {can, w: v.videoWidth, h: v.videoHeight, d: v.duration, px: Array.from(px)};
                }""",
                src,
            )
        finally:
            browser.close()
    assert result["can"] in ("probably", "maybe")
    assert (result["w"], result["h"]) == (96, 64)
    assert result["d"] == pytest.approx(2.0, abs=0.2)
    r, g, b, _ = result["px"]
    assert r > 150 and g < 80 and b < 80  # an early frame: still red at the right edge
