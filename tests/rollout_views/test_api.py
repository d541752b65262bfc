"""The rollout member list and the model placement over HTTP (real uvicorn on loopback,
real tokens): pages in id order with filters read in SQL, a forged or foreign cursor is a
400 ``E_BAD_CURSOR`` (the page falls back to the first page with a notice), strangers get
401; the model views show counts and link to the paged fleet view, never device lists."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

from .checks import brute_placement, brute_rows
from .seed import ROLLOUT, seed_rollout

MEMBERS = 90


@dataclass
class Site:
    url: str
    controller: Controller
    tokens: dict[str, str]

    def get(self, path: str, role: str | None = "viewer", **params: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=60)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = load_settings(Path(tmp_path_factory.mktemp("rollout-views")), env={}, http_port=free_port(),
                             auth_max_failures=100_000)
    controller = Controller(settings)
    controller.migrate()
    with controller.session() as s:
        tokens = {role: create_token(s, f"{role}-user", role)[1] for role in ROLES}
    seed_rollout(controller.engine, MEMBERS)
    server = UvicornThread(create_app(controller), settings.http_host, settings.http_port)
    server.start()
    yield Site(settings.base_url, controller, tokens)
    server.stop()
    controller.engine.dispose()


def _walk(site: Site, **params: object) -> tuple[list[str], list[dict]]:
    ids, pages, cursor = [], [], None
    while True:
        r = site.get(f"/api/v1/rollouts/{ROLLOUT}/devices", **params, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        ids += [m["device"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids, pages


def test_member_pages_over_http_walk_every_member_once_with_filters_in_sql(site: Site) -> None:
    import time

    ids, pages = _walk(site, limit=16)
    assert len(ids) == len(set(ids)) == MEMBERS and ids == sorted(ids)
    assert all(p["total"] == MEMBERS and p["limit"] == 16 for p in pages)
    with Session(site.controller.engine) as s:
        rows = brute_rows(s, ROLLOUT, time.time())
    healthy_wave2 = [r["device"] for r in rows if r["status"] == "healthy" and r["wave"] == 1]
    got, pages = _walk(site, limit=3, status="healthy", wave=2)  # the API's waves count from 1
    assert got == healthy_wave2 and pages[0]["total"] == len(healthy_wave2)
    assert all(m["status"] == "healthy" and m["wave"] == 1 for p in pages for m in p["items"])
    assert site.get(f"/api/v1/rollouts/{ROLLOUT}/devices", status="no_such").json()["items"] == []


def test_a_forged_or_foreign_cursor_is_a_400_and_strangers_get_401(site: Site) -> None:
    path = f"/api/v1/rollouts/{ROLLOUT}/devices"
    good = site.get(path, limit=10).json()["next_cursor"]
    payload, _, check = good.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["k"] = "dev-000000"  # moved back to the start: the check no longer fits
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=") + "." + check
    for bad in (forged, "not-a-cursor", payload + ".0000000000000000"):
        r = site.get(path, limit=10, cursor=bad)
        assert r.status_code == 400 and r.json()["code"] == "E_BAD_CURSOR", r.text
    r = site.get(path, limit=10, cursor=good, status="healthy")  # another filter's cursor
    assert r.status_code == 400 and r.json()["code"] == "E_BAD_CURSOR"
    r = site.get("/api/v1/rollouts/r-other/devices", limit=10, cursor=good)
    assert r.status_code == 404
    assert site.get(path, role=None).status_code == 401
    page = site.get(f"/ui/rollouts/{ROLLOUT}", cursor=forged)  # the page: the first page, and says why
    assert page.status_code == 200 and "does not fit this list" in page.text
    assert site.get(path, limit=10, cursor=good).status_code == 200


def test_model_views_count_placement_and_link_to_the_paged_fleet_view(site: Site) -> None:
    with Session(site.controller.engine) as s:
        want = brute_placement(s)
    text = unescape(site.get("/ui/models/digits/2.0").text)
    control = want.get("digits:2.0", {}).get("control", 0)
    assert control > 0 and f"{control} devices · " in text
    assert 'href="/ui/fleet?model=control%3Ddigits%3A2.0"' in text
    assert "dev-000" not in text  # no device list
    listing = site.get("/api/v1/models").json()
    running = {f"{m['name']}:{m['version']}": m["running"] for m in listing}
    assert set(running) >= {"digits:1.0", "digits:2.0"}
    detail = site.get("/api/v1/models/digits/versions/2.0").json()
    assert detail["running"] == running["digits:2.0"]
    assert all(len(v) <= 500 for v in detail["devices"].values())
    assert sum(len(v) for v in detail["devices"].values()) == sum(running["digits:2.0"].values())
