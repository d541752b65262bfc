"""Per-device upload quota: open sessions and declared bytes are bounded (429 naming the
setting); completing a session, or leaving it idle past the stale age, frees its share."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from edgefleet.cloud.uploads import QuotaExceeded, UploadLimits, UploadStore
from edgefleet.protocols import Event, ModelOutput, encode
from edgefleet.registry import LocalBlobStore

from .conftest import Fleet

MiB = 1024 * 1024


def _event(device_id: str) -> dict:
    e = Event(device_id=device_id, event_id=uuid.uuid4().hex, trigger="disagreement",
              control=ModelOutput(label="3", score=0.4), candidate=ModelOutput(label="8", score=0.7), frame_index=1)
    return json.loads(encode(e))


def _body(device_id: str, clip_size: int = 1000, keyframe_size: int = 0, clip: bytes | None = None) -> dict:
    clip_sha = hashlib.sha256(clip).hexdigest() if clip is not None else "0" * 64
    return {"event": _event(device_id),
            "clip": {"size": len(clip) if clip is not None else clip_size, "sha256": clip_sha, "content_type": "video/webm"},
            "keyframe": {"size": keyframe_size, "sha256": "1" * 64, "content_type": "image/jpeg"} if keyframe_size else None}


def _open(fleet: Fleet, device_id: str, body: dict) -> httpx.Response:
    return httpx.post(fleet.url + "/api/v1/uploads", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {fleet.device[device_id]}"})


def test_a_ninth_open_session_is_429_and_completing_one_frees_a_place(fleet: Fleet) -> None:
    clip = b"\x1aE\xdf\xa3 quota clip " * 10
    first = _open(fleet, "dev-a", _body("dev-a", clip=clip))
    assert first.status_code == 200
    bodies = [_body("dev-a") for _ in range(7)]
    assert all(_open(fleet, "dev-a", b).status_code == 200 for b in bodies)
    refused = _open(fleet, "dev-a", _body("dev-a"))
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded" and refused.json()["limit"] == "upload_max_open_sessions"
    assert "upload_max_open_sessions" in refused.json()["detail"] and "8" in refused.json()["detail"]
    assert _open(fleet, "dev-a", bodies[0]).status_code == 200  # re-opening one it has is idempotent, not a ninth
    assert _open(fleet, "dev-b", _body("dev-b")).status_code == 200  # another device has its own quota
    uid, h = first.json()["upload_id"], {"Authorization": f"Bearer {fleet.device['dev-a']}"}
    put = httpx.put(f"{fleet.url}/api/v1/uploads/{uid}/clip", content=clip, timeout=30,
                    headers={**h, "Content-Range": f"bytes 0-{len(clip) - 1}/{len(clip)}"})
    assert put.status_code == 200
    assert httpx.post(f"{fleet.url}/api/v1/uploads/{uid}/complete", headers=h, timeout=30).status_code == 200
    assert _open(fleet, "dev-a", _body("dev-a")).status_code == 200


def test_declared_bytes_past_512_mib_of_open_sessions_are_429(fleet: Fleet) -> None:
    fleet.device["dev-q"] = fleet.stack.client.enrol_device("dev-q", "cpu-x86_64")["token"]
    big = [_body("dev-q", clip_size=64 * MiB, keyframe_size=4 * MiB) for _ in range(8)]
    codes = [_open(fleet, "dev-q", b).status_code for b in big[:7]]
    assert codes == [200] * 7
    refused = _open(fleet, "dev-q", big[7])  # the 8th session is allowed by count, but 8 × 68 MiB > 512 MiB
    assert refused.status_code == 429 and refused.json()["limit"] == "upload_max_open_bytes"
    assert str(512 * MiB) in refused.json()["detail"]


def test_the_quota_comes_from_controller_toml(tmp_path: Path) -> None:
    from edgefleet.cloud.api import create_app
    from edgefleet.cloud.runtime import Controller
    from edgefleet.cloud.settings import load_settings

    home = tmp_path / "c"
    home.mkdir()
    (home / "controller.toml").write_text("[controller]\nupload_max_open_sessions = 2\nupload_max_open_bytes = 4096\n")
    c = Controller(load_settings(home, env={}))
    create_app(c)
    limits = c.upload_store.limits  # type: ignore[attr-defined]
    assert (limits.max_open_sessions, limits.max_open_bytes) == (2, 4096)
    c.engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def _store(tmp_path: Path, clock: Clock) -> UploadStore:
    return UploadStore(tmp_path / "staging", LocalBlobStore(tmp_path / "blobs"), lambda clip: None,
                       limits=UploadLimits(max_open_sessions=2, stale_open_s=3600), clock=clock)


def test_an_idle_session_stops_counting_and_is_removed_when_the_room_is_needed(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    a = store.create("dev-a", json.dumps(_body("dev-a")).encode())
    store.create("dev-a", json.dumps(_body("dev-a")).encode())
    with pytest.raises(QuotaExceeded):
        store.create("dev-a", json.dumps(_body("dev-a")).encode())
    clock.now += timedelta(hours=2)
    assert store.open_sessions("dev-a") == (0, 0)
    store.create("dev-a", json.dumps(_body("dev-a")).encode())
    assert not (tmp_path / "staging" / a.upload_id).exists()  # the stale one made room


def test_a_stale_session_in_the_new_sessions_lock_stripe_is_removed_too(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions share lock stripes (by hash): the create holding the new session's stripe must
    still remove a stale session of the same stripe (one stripe here, so every one shares it)."""
    from edgefleet.cloud.uploads import store as store_module

    monkeypatch.setattr(store_module, "_LOCK_STRIPES", 1)
    test_an_idle_session_stops_counting_and_is_removed_when_the_room_is_needed(tmp_path)


def test_the_quota_survives_a_controller_restart(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock)
    for _ in range(2):
        store.create("dev-a", json.dumps(_body("dev-a", clip_size=700)).encode())
    again = _store(tmp_path, clock)
    assert again.open_sessions("dev-a") == (2, 1400)
    with pytest.raises(QuotaExceeded):
        again.create("dev-a", json.dumps(_body("dev-a")).encode())
