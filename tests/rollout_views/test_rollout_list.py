"""The rollout list (``/ui/rollouts``, ``GET /api/v1/rollouts``) costs the same few statements
whatever the history: one keyset page of rollout rows and one GROUP BY over the members of the
rollouts on the page (issue 14). Each row's figures equal the rollout's own status fold, on
SQLite and PostgreSQL; pages walk newest first with opaque cursors; operator strings are escaped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from edgefleet.cloud import db
from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.devices.cursor import BadCursor
from edgefleet.cloud.rollout import service
from edgefleet.cloud.rollout.archive import archive_finished
from edgefleet.cloud.rollout.members import member_count
from edgefleet.cloud.rollout.model import RolloutState, WaveRecord
from edgefleet.cloud.rollout.tables import Rollout, RolloutMember
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.tables import Device

from .seed import ROLLOUT, seed_rollout

MEMBERS = 96
HOSTILE = '<script>alert("ro")</script>'


def add_rollouts(engine: Engine, n: int, now: float, *, first: int = 0) -> list[str]:
    """``n`` more rollouts over copies of ``r-views``' members (every third one), in other states,
    waves started or not, a shadow-slot one and one without members; returns their ids."""
    with Session(engine) as s:
        base = s.get(Rollout, ROLLOUT)
        assert base is not None
        members = [dict(r._mapping) for r in s.execute(select(RolloutMember.__table__)  # type: ignore[arg-type]
                                                       .where(RolloutMember.__table__.c.rollout_id == ROLLOUT)).all()]
        ids = []
        for i in range(first, first + n):
            rid = f"r-hist-{i:04d}"
            kind = i % 5
            state = {0: "superseded", 1: "paused", 2: "running", 3: "aborted", 4: "running"}[kind]
            current = 0 if kind == 2 else 1  # kind 2: only wave 0 has started
            history = () if current == 0 else (WaveRecord(index=0, started_at=now - 7200, ended_at=now - 600,
                                                          outcome="passed"),)
            st = RolloutState(rollout_id=rid, state=state, current_wave=current, started_at=now - 7200,
                              wave_started_at=now - 600, history=history,
                              reason=f"paused by {HOSTILE}" if kind == 1 else None)
            s.add(Rollout(id=rid, model_version_id=base.model_version_id, model_name=base.model_name,
                          model_version=base.model_version, digest=base.digest,
                          slot="shadow" if kind == 3 else "control", select=f"tag:site-{i}",
                          waves="10,50,100", soak="5m", gates=[], on_breach="pause", device_timeout="30m",
                          state=state, state_json=st.model_dump_json(), created_at=now - 3600 + (i // 2),  # ties too
                          updated_at=now))
            s.flush()
            if i % 7 != 6:  # every seventh: no members at all
                rows = [{**m, "rollout_id": rid} for k, m in enumerate(members) if (k + i) % 3 == 0]
                s.connection().execute(insert(RolloutMember.__table__), rows)  # type: ignore[arg-type]
            ids.append(rid)
        s.commit()
    return ids


def mark_some_stale(engine: Engine) -> None:
    """A few running members' devices stale or lagging, one active device offline: not on the model."""
    with Session(engine) as s:
        ids = [r[0] for r in s.execute(select(RolloutMember.__table__.c.device_id)  # type: ignore[attr-defined]
                                       .where(RolloutMember.__table__.c.rollout_id == ROLLOUT)  # type: ignore[attr-defined]
                                       .order_by(RolloutMember.__table__.c.device_id)).all()]  # type: ignore[attr-defined]
        for k, d in enumerate(ids):
            if k % 8 == 2 and k % 3 == 0:
                s.execute(update(Device).where(Device.id == d).values(stale_since=datetime.now(timezone.utc)))  # type: ignore[arg-type]
            elif k % 8 == 2 and k % 3 == 1:
                s.execute(update(Device).where(Device.id == d).values(lagging_since=datetime.now(timezone.utc)))  # type: ignore[arg-type]
            elif k % 8 == 3 and k % 2 == 0:
                s.execute(update(Device).where(Device.id == d).values(online=False))  # type: ignore[arg-type]
        s.commit()


def seeded(engine: Engine, now: float) -> list[str]:
    seed_rollout(engine, MEMBERS, now=now)
    mark_some_stale(engine)
    ids = add_rollouts(engine, 24, now)
    with Session(engine) as s:  # aborted/superseded rollouts' members go to the archive
        while archive_finished(s, now):
            pass
    return [ROLLOUT, *ids]


def check_figures_equal_the_status_fold(engine: Engine, now: float, ids: list[str]) -> None:
    with Session(engine) as s:
        listed: list[tuple[Any, Any]] = []
        cursor = None
        while True:
            rows, cursor = service.list_page(s, limit=7, cursor=cursor)
            listed += rows
            if cursor is None:
                break
        assert sorted(r.id for r, _ in listed) == sorted(ids) and len(listed) == len(ids)
        created = [(r.created_at, r.id) for r, _ in listed]
        assert created == sorted(created, reverse=True)  # newest first, ties by id, each once
        archived = on_model = 0
        for summary, fig in listed:
            st = service.status(s, summary.id, now, devices=False, events=0)
            assert (fig.devices, fig.on_model) == (st["devices"], st["on_model"]), summary.id
            assert fig.progress == pytest.approx(st["progress"])
            assert summary.devices == fig.members == member_count(s, summary.id)
            row = s.get(Rollout, summary.id)
            assert row is not None and summary == service.summary(s, row)  # what the list said before
            archived += row.archived_at is not None and fig.members > 0
            on_model += fig.on_model
        assert archived >= 3 and on_model > 0  # the archive and running members were both counted
        paused = [r.id for r, _ in service.list_page(s, state="paused", limit=100)[0]]
        assert paused and all(s.get(Rollout, i).state == "paused" for i in paused)  # type: ignore[union-attr]
        first, cur = service.list_page(s, state="paused", limit=2)
        assert cur is not None
        with pytest.raises(BadCursor):  # another filter's position
            service.list_page(s, state="running", limit=2, cursor=cur)


def test_list_figures_equal_each_rollouts_status_fold_on_sqlite(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'list.db'}")
    db.migrate(engine)
    now = time.time()
    check_figures_equal_the_status_fold(engine, now, seeded(engine, now))


def test_list_figures_equal_each_rollouts_status_fold_on_postgresql(postgres: str) -> None:
    engine = db.make_engine(postgres)
    try:
        db.migrate(engine)
        now = time.time()
        check_figures_equal_the_status_fold(engine, now, seeded(engine, now))
    finally:
        engine.dispose()


# ----- over HTTP: the statements a page costs -----


class Site:
    def __init__(self, url: str, controller: Controller, tokens: dict[str, str]):
        self.url, self.controller, self.tokens = url, controller, tokens

    def get(self, path: str, role: str | None = "viewer", **params: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=60)  # type: ignore[arg-type]

    def statements(self, path: str, **params: object) -> tuple[int, httpx.Response]:
        seen: list[str] = []

        def grab(*a: Any) -> None:
            seen.append(a[2])

        event.listen(self.controller.engine, "before_cursor_execute", grab)
        try:
            r = self.get(path, **params)
        finally:
            event.remove(self.controller.engine, "before_cursor_execute", grab)
        assert r.status_code == 200, r.text
        return len(seen), r


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = load_settings(Path(tmp_path_factory.mktemp("rollout-list")), env={}, http_port=free_port(),
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


def test_a_page_costs_the_same_statements_with_8_or_240_rollouts_in_history(site: Site) -> None:
    now = time.time()
    add_rollouts(site.controller.engine, 7, now)  # one without members: the archive is asked too
    site.get("/ui/rollouts")  # warm: first-use reads (settings, nav) are not the list's cost
    small_ui, _ = site.statements("/ui/rollouts")
    small_api, r = site.statements("/api/v1/rollouts", limit=50)
    assert len(r.json()) == 8 and "x-next-cursor" not in r.headers
    add_rollouts(site.controller.engine, 232, now, first=7)
    big_ui, page = site.statements("/ui/rollouts")
    big_api, r = site.statements("/api/v1/rollouts", limit=50)
    assert (big_ui, big_api) == (small_ui, small_api), (small_ui, big_ui, small_api, big_api)
    assert big_ui <= 8 and big_api <= 6  # auth, the page of rollouts, one GROUP BY (+ the archive's)
    assert len(r.json()) == 50 and r.headers["x-next-cursor"]
    html = page.text
    assert html.count('<tr data-rollout="') == 100 and 'id="rollouts-next"' in html
    assert HOSTILE not in html and "&lt;script&gt;alert(&#34;ro&#34;)&lt;/script&gt;" in html  # operator strings escaped


def test_api_pages_walk_newest_first_and_a_forged_cursor_is_a_400(site: Site) -> None:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = site.get("/api/v1/rollouts", limit=33, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        seen += r.json()
        cursor = r.headers.get("x-next-cursor")
        if not cursor:
            break
    ids = [x["id"] for x in seen]
    assert len(ids) == len(set(ids)) >= 4
    assert [(x["created_at"], x["id"]) for x in seen] == sorted(((x["created_at"], x["id"]) for x in seen), reverse=True)
    assert set(seen[0]) >= {"id", "model", "slot", "select", "state", "current_wave", "waves", "devices"}  # the shape
    good = site.get("/api/v1/rollouts", limit=2).headers["x-next-cursor"]
    for bad in ("garbage", good[:-1] + ("0" if good[-1] != "0" else "1")):
        r = site.get("/api/v1/rollouts", limit=2, cursor=bad)
        assert r.status_code == 400 and r.json()["code"] == "E_BAD_CURSOR", r.text
    r = site.get("/api/v1/rollouts", limit=2, cursor=good, state="paused")  # another filter's cursor
    assert r.status_code == 400 and r.json()["code"] == "E_BAD_CURSOR"
    page = site.get("/ui/rollouts", cursor="garbage")  # the page: the newest rollouts, and says why
    assert page.status_code == 200 and 'id="pager-notice"' in page.text
    nxt = unescape(site.get("/ui/rollouts").text).split('id="rollouts-next" rel="next" href="', 1)[1].split('"', 1)[0]
    older = site.get(nxt.split("?", 1)[0], cursor=nxt.split("cursor=", 1)[1]).text
    assert 'id="rollouts-first"' in older and 'id="pager-notice"' not in older
    assert site.get("/api/v1/rollouts", role=None).status_code == 401


def test_the_client_and_fleet_rollout_ls_follow_the_next_cursor(site: Site) -> None:
    """``ApiClient.list_rollouts`` and ``fleet rollout ls --all`` walk every page; ``--limit N``
    shows the newest N, across page boundaries."""
    import json

    from typer.testing import CliRunner

    from edgefleet.cloud.cli import app
    from edgefleet.cloud.client import ApiClient

    add_rollouts(site.controller.engine, 12, time.time(), first=900)  # more than a small page
    walked: list[str] = []
    cursor = None
    while True:  # the reference: the raw pages
        r = site.get("/api/v1/rollouts", limit=1000, **({"cursor": cursor} if cursor else {}))
        walked += [x["id"] for x in r.json()]
        cursor = r.headers.get("x-next-cursor")
        if not cursor:
            break
    client = ApiClient(site.url, site.tokens["viewer"])
    try:
        assert [x["id"] for x in client.list_rollouts(limit=None, page_size=5)] == walked
        assert [x["id"] for x in client.list_rollouts(limit=7, page_size=5)] == walked[:7]
        page, nxt = client.list_rollouts_page(limit=3)
        assert [x["id"] for x in page] == walked[:3] and nxt
        assert [x["id"] for x in client.list_rollouts_page(limit=3, cursor=nxt)[0]] == walked[3:6]
    finally:
        client.close()
    base = ["--url", site.url, "--token", site.tokens["viewer"], "--json"]
    every = CliRunner().invoke(app, ["rollout", "ls", "--all", *base])
    assert every.exit_code == 0, every.output
    assert [x["id"] for x in json.loads(every.output)] == walked
    newest = CliRunner().invoke(app, ["rollout", "ls", "--limit", "4", *base])
    assert newest.exit_code == 0 and [x["id"] for x in json.loads(newest.output)] == walked[:4]
    assert CliRunner().invoke(app, ["rollout", "ls", "--limit", "0", *base]).exit_code != 0  # validated
