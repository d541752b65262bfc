"""A device token reads only its own director metadata and the bundles meant for it; clips and
every operator route are closed to it; API tokens keep full read."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from edgefleet.cloud.tables import Device
from tests.roles.test_unauthenticated import all_routes, concrete

from .conftest import Fleet, upload_clip


def test_device_reads_its_own_director_metadata_and_the_shared_image_metadata(fleet: Fleet) -> None:
    a = fleet.device["dev-a"]
    for path in ("/tuf/director/dev-a/timestamp.json", "/tuf/director/dev-a/root.json",
                 "/tuf/director/dev-a/1.targets.json", "/tuf/image/metadata/timestamp.json"):
        r = fleet.get(path, a)
        assert r.status_code == 200, (path, r.status_code, r.text)
    targets = fleet.get("/tuf/director/dev-a/1.targets.json", a).json()["signed"]
    assert [t["hashes"]["sha256"] for t in targets["targets"].values()] == [fleet.models["1.0"].digest]


@pytest.mark.parametrize("name", ["timestamp.json", "root.json", "1.targets.json", "1.root.json", "nothing.json"])
def test_device_cannot_read_another_devices_director_metadata(fleet: Fleet, name: str) -> None:
    r = fleet.get(f"/tuf/director/dev-b/{name}", fleet.device["dev-a"])
    assert r.status_code == 403
    assert "own director metadata" in r.json()["detail"] and "dev-a" in r.json()["detail"]


def test_device_downloads_the_image_target_its_director_names_and_no_other(fleet: Fleet) -> None:
    a = fleet.device["dev-a"]
    mine = fleet.get(fleet.target_path("1.0"), a)
    assert mine.status_code == 200 and hashlib.sha256(mine.content).hexdigest() == fleet.models["1.0"].digest
    resumed = fleet.get(fleet.target_path("1.0"), a, headers={"Range": "bytes=100-"})
    assert resumed.status_code == 206 and resumed.content == mine.content[100:]
    for version in ("2.0", "3.0"):  # dev-b's model; a model assigned to nobody
        r = fleet.get(fleet.target_path(version), a)
        assert r.status_code == 403 and "director targets or slots" in r.json()["detail"], (version, r.text)


def test_bundle_route_serves_a_device_only_its_own_bundles(fleet: Fleet) -> None:
    a = fleet.device["dev-a"]
    mine = fleet.get(f"/api/v1/bundles/{fleet.models['1.0'].digest}", a)
    assert mine.status_code == 200 and hashlib.sha256(mine.content).hexdigest() == fleet.models["1.0"].digest
    for version in ("2.0", "3.0"):
        r = fleet.get(f"/api/v1/bundles/{fleet.models[version].digest}", a)
        assert r.status_code == 403 and "dev-a" in r.json()["detail"]
    assert fleet.get("/api/v1/bundles/" + "0" * 64, a).status_code == 403  # unknown: refused before any lookup


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_api_tokens_read_every_devices_metadata_and_every_bundle(fleet: Fleet, role: str) -> None:
    t = fleet.user[role]
    for device in ("dev-a", "dev-b"):
        assert fleet.get(f"/tuf/director/{device}/timestamp.json", t).status_code == 200
    for version in ("1.0", "2.0", "3.0"):
        assert fleet.get(fleet.target_path(version), t).status_code == 200
        assert fleet.get(f"/api/v1/bundles/{fleet.models[version].digest}", t).status_code == 200


def test_a_reported_last_known_good_model_stays_downloadable_but_a_reported_clip_digest_does_not(fleet: Fleet) -> None:
    a = fleet.device["dev-a"]
    status = upload_clip(fleet.url, "dev-a", a, b"\x1aE\xdf\xa3 webm of dev-a " * 50, b"\xff\xd8 jpeg " * 20)
    clip_digest = hashlib.sha256(b"\x1aE\xdf\xa3 webm of dev-a " * 50).hexdigest()
    lkg = fleet.models["3.0"]
    ref = {"name": "digits", "version": "3.0", "digest": lkg.digest}
    claimed_clip = {"name": "clip", "version": "1", "digest": clip_digest}
    with fleet.stack.controller.session() as s:  # what a (verified) report of dev-a left in the database
        dev = s.get(Device, "dev-a")
        assert dev is not None
        saved = dev.reported
        dev.reported = {"slots": {"control": {"installed": claimed_clip, "last_known_good": ref},
                                  "shadow": {"installed": "not a ref", "last_known_good": None}}}
        s.add(dev)
        s.commit()
    try:
        assert fleet.get(f"/api/v1/bundles/{lkg.digest}", a).status_code == 200  # a rollback download works
        assert fleet.get(fleet.target_path("3.0"), a).status_code == 200
        assert fleet.get(f"/api/v1/bundles/{clip_digest}", a).status_code == 403  # never a clip, even its own
        assert fleet.get(f"/api/v1/bundles/{lkg.digest}", fleet.device["dev-b"]).status_code == 403
    finally:
        with fleet.stack.controller.session() as s:
            dev = s.get(Device, "dev-a")
            assert dev is not None
            dev.reported = saved
            s.add(dev)
            s.commit()
    assert status["state"] == "completed"


def test_clips_are_for_viewers_only_never_for_device_tokens(fleet: Fleet) -> None:
    clip, keyframe = b"\x1aE\xdf\xa3 webm of dev-b " * 40, b"\xff\xd8 jpeg of dev-b " * 10
    clip_id = upload_clip(fleet.url, "dev-b", fleet.device["dev-b"], clip, keyframe)["clip_id"]
    for path in (f"/api/v1/clips/{clip_id}", f"/api/v1/clips/{clip_id}/keyframe", f"/api/v1/clips/{clip_id}/meta"):
        for device in ("dev-a", "dev-b"):  # another device's clip, and the uploader's own
            r = fleet.get(path, fleet.device[device])
            assert r.status_code == 403 and "viewer" in r.json()["detail"], (path, device, r.text)
        assert fleet.get(path, fleet.user["viewer"]).status_code == 200, path
    assert fleet.get(f"/api/v1/clips/{clip_id}", fleet.user["viewer"]).content == clip
    assert fleet.get(f"/api/v1/bundles/{hashlib.sha256(clip).hexdigest()}", fleet.device["dev-b"]).status_code == 403


# Routes a device token is meant to use; every other route must answer it 403.
DEVICE_ROUTES = ("/api/v1/uploads", "/tuf/", "/api/v1/bundles/", "/api/v1/devices/self/")
PUBLIC = {"/api/v1/health", "/api/v1/health/live", "/api/v1/health/ready", "/ui/login", "/ui/logout", "/", "/ui"}


def _operator_routes(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    out = []
    for route in all_routes(app):
        path = getattr(route, "path", "") or ""
        if path in PUBLIC or path.startswith(("/ui/", *DEVICE_ROUTES)):
            continue
        out += [(m, path) for m in sorted(getattr(route, "methods", None) or {"GET"}) if m not in ("HEAD", "OPTIONS")]
    return out


def test_every_operator_route_answers_a_device_token_403_with_a_reason(fleet: Fleet) -> None:
    routes = _operator_routes(fleet.stack.http.server.config.app)
    assert len(routes) >= 25, routes
    wrong = []
    with httpx.Client(base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.device['dev-a']}"}, timeout=30) as c:
        for method, path in routes:
            r = c.request(method, concrete(path))
            detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") else ""
            if r.status_code != 403 or not detail:
                wrong.append(f"{method} {path}: {r.status_code} {r.text[:80]}")
    assert wrong == []


@pytest.mark.parametrize("path", ["/ui/fleet", "/ui/tokens"])
def test_ui_pages_do_not_accept_a_device_token(fleet: Fleet, path: str) -> None:
    r = httpx.get(fleet.url + path, cookies={"edgefleet_token": fleet.device["dev-a"]}, timeout=30)
    assert r.status_code == 401 and 'name="token"' in r.text


def test_device_token_gets_403_for_the_api_docs(fleet: Fleet) -> None:
    for path in ("/api/v1/openapi.json", "/api/v1/docs"):
        r = fleet.get(path, fleet.device["dev-a"])
        assert r.status_code == 403 and "viewer" in r.json()["detail"]
