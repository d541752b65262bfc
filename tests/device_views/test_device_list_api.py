"""GET /api/v1/devices and /devices/counts over real HTTP against a bulk-seeded fleet:
paging walks every device once (new devices arriving meanwhile), every filter, cursor and
limit validation, counts by GROUP BY, and a page costs the same number of statements
whatever its size."""

from __future__ import annotations

import base64
import json
from collections import Counter

import httpx
import pytest
from sqlalchemy import event
from sqlmodel import Session

from edgefleet.cloud.client import ApiError
from edgefleet.cloud.devices import views as dv

from .conftest import N
from .seed import PROFILES, device_id, expected, seed


def _walk(client, page_size: int, between=None, **filters) -> list[str]:  # type: ignore[no-untyped-def]
    seen, cursor, pages = [], None, 0
    while True:
        page = client.list_devices_page(limit=page_size, cursor=cursor, **filters)
        assert len(page["items"]) <= page_size
        seen += [d["id"] for d in page["items"]]
        pages += 1
        if between:
            between(pages)
        cursor = page["next_cursor"]
        if not cursor:
            return seen


def test_paging_walks_every_device_exactly_once_while_devices_are_enrolled(views) -> None:  # type: ignore[no-untyped-def]
    client = views.client()
    before = {device_id(i) for i in range(N)}
    added: list[str] = []

    def enrol_more(page_no: int) -> None:  # between pages: one before the cursor, one after
        seed(views.controller.engine, 1, start=N + page_no)
        added.append(device_id(N + page_no))

    seen = _walk(client, 17, between=enrol_more, profile=None)
    assert len(seen) == len(set(seen)), [d for d, n in Counter(seen).items() if n > 1]
    assert before <= set(seen)  # every device that existed at the start, once
    assert set(seen) - before <= set(added)  # and nothing that does not exist
    assert seen == sorted(seen)  # stable order: device id


def test_each_filter_selects_exactly_the_matching_devices(views) -> None:  # type: ignore[no-untyped-def]
    client = views.client()
    facts = {device_id(i): expected(i) for i in range(N)}

    def ids(pred) -> list[str]:  # type: ignore[no-untyped-def]
        return sorted(d for d, e in facts.items() if pred(e))

    def listed(**filters) -> list[str]:  # type: ignore[no-untyped-def]
        return [d for d in _walk(client, 1000, **filters) if d in facts]

    assert listed(tag=["site=dock"]) == ids(lambda e: e["site"] == "dock")
    assert listed(profile=PROFILES[1]) == ids(lambda e: e["profile"] == PROFILES[1])
    for state in dv.STATES:
        assert listed(state=state) == ids(lambda e, s=state: e["state"] == s), state
    assert listed(stale=True) == ids(lambda e: e["stale"])
    assert listed(stale=False) == ids(lambda e: not e["stale"])
    assert listed(model=["control=digits:2.0"]) == ids(lambda e: e["control"] == "digits:2.0")
    assert listed(model=["shadow=digits:2.0"]) == ids(lambda e: e["shadow"] == "digits:2.0")
    assert listed(installed=["control=digits:1.0"]) == ids(lambda e: e["control"] == "digits:1.0")
    both = listed(tag=["site=gate"], profile=PROFILES[0], state="online", model=["control=digits:1.0"])
    assert both == ids(lambda e: e["site"] == "gate" and e["profile"] == PROFILES[0] and e["state"] == "online"
                       and e["control"] == "digits:1.0")
    assert listed(tag=["site=nowhere"]) == [] and listed(model=["control=digits:9.9"]) == []


def test_counts_group_the_filtered_fleet(views) -> None:  # type: ignore[no-untyped-def]
    client = views.client()
    facts = [expected(i) for i in range(N)]
    c = client.device_counts(tag=["site=lab"])
    lab = [e for e in facts if e["site"] == "lab"]
    extra = c["total"] - len(lab)  # devices the paging test enrolled (same seed rules) may be there too
    assert extra >= 0
    if extra == 0:
        assert c["by_state"] == {s: sum(1 for e in lab if e["state"] == s) for s in dv.STATES}
        assert c["by_profile"] == dict(sorted(Counter(e["profile"] for e in lab).items()))
        assert c["by_model"]["control"] == dict(sorted(Counter(e["control"] for e in lab).items()))
        assert c["stale"] == sum(1 for e in lab if e["stale"])
    whole = client.device_counts()
    assert whole["total"] == sum(whole["by_state"].values()) == sum(whole["by_profile"].values())
    assert whole["by_installed"]["control"] == whole["by_model"]["control"]  # the seed reports what it was assigned
    assert client.device_counts(tag=["site=nowhere"])["total"] == 0


@pytest.mark.parametrize("bad", [
    "garbage", "a.b", "eyJ2IjoxfQ.0123456789abcdef",
    base64.urlsafe_b64encode(json.dumps({"v": 1, "d": "after", "k": "dev-000100"}).encode()).decode() + ".0000000000000000",
    "%00%ff", "x" * 512,
])
def test_a_garbage_cursor_is_a_400_problem(views, bad: str) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{views.url}/api/v1/devices", params={"cursor": bad},
                  headers={"Authorization": f"Bearer {views.tokens['viewer']}"}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["code"] == "E_BAD_CURSOR"


def test_a_tampered_cursor_or_one_from_other_filters_is_refused(views) -> None:  # type: ignore[no-untyped-def]
    client = views.client()
    cursor = client.list_devices_page(limit=5)["next_cursor"]
    payload, check = cursor.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["k"] = "dev-000200"  # skip ahead by editing the position
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=") + "." + check
    for bad, filters in ((forged, {}), (cursor, {"profile": PROFILES[0]})):
        with pytest.raises(ApiError) as exc:
            client.list_devices_page(cursor=bad, **filters)
        assert exc.value.status_code == 400 and exc.value.code == "E_BAD_CURSOR"
    assert client.list_devices_page(limit=5, cursor=cursor)["items"][0]["id"] == device_id(5)  # the real one works


@pytest.mark.parametrize(("params", "status"), [
    ({"limit": 0}, 422), ({"limit": 1001}, 422), ({"limit": -1}, 422), ({"limit": "ten"}, 422),
    ({"state": "sleeping"}, 422), ({"tag": "no-equals-sign"}, 422), ({"model": "digits:2.0"}, 422),
    ({"model": "cache=digits:2.0"}, 422), ({"profile": ""}, 422), ({"stale": "maybe"}, 422),
    ({"limit": 1}, 200), ({"limit": 1000}, 200),
])
def test_limit_and_filters_are_validated_at_the_schema(views, params, status) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{views.url}/api/v1/devices", params=params, headers={"Authorization": f"Bearer {views.tokens['viewer']}"}, timeout=60)
    assert r.status_code == status, r.text
    if status == 200:
        body = r.json()
        assert 1 <= len(body["items"]) <= params["limit"] and body["limit"] == params["limit"]
        assert body["prev_cursor"] is None and (body["next_cursor"] is None) == (len(body["items"]) < params["limit"])


def test_default_page_is_100_devices_and_the_last_page_has_no_next_cursor(views) -> None:  # type: ignore[no-untyped-def]
    client = views.client()
    first = client.list_devices_page()
    assert len(first["items"]) == 100 and first["next_cursor"]
    last = client.list_devices_page(limit=1000)
    assert last["next_cursor"] is None


def test_prev_cursor_returns_the_page_before(views) -> None:  # type: ignore[no-untyped-def]
    client = views.client()
    p1 = client.list_devices_page(limit=10, tag=["site=yard"])
    p2 = client.list_devices_page(limit=10, cursor=p1["next_cursor"], tag=["site=yard"])
    back = client.list_devices_page(limit=10, cursor=p2["prev_cursor"], tag=["site=yard"])
    assert [d["id"] for d in back["items"]] == [d["id"] for d in p1["items"]] and back["prev_cursor"] is None


def _statements(engine, fn) -> int:  # type: ignore[no-untyped-def]
    count = [0]

    def on_execute(*_args) -> None:  # type: ignore[no-untyped-def]
        count[0] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    return count[0]


@pytest.mark.parametrize("filters", [dv.DeviceFilter(), dv.DeviceFilter(tags=(("site", "dock"),), state="online"),
                                     dv.DeviceFilter(models=(("control", "digits", "2.0"),), stale=False)])
def test_a_page_costs_the_same_statements_whatever_its_size(views, filters) -> None:  # type: ignore[no-untyped-def]
    engine = views.controller.engine
    costs = {}
    for size in (1, 10, 100, 200):
        with Session(engine) as s:
            costs[size] = _statements(engine, lambda s=s, size=size: views_page(s, filters, size))
    assert len(set(costs.values())) == 1, costs
    assert costs[1] <= 3, costs  # the page, its slot assignments, the inactive versions
    with Session(engine) as s:  # and counts: a fixed number of GROUP BYs whatever the fleet
        assert _statements(engine, lambda: dv.counts(s, filters)) <= 6


def views_page(session: Session, filters: dv.DeviceFilter, size: int) -> None:
    page = dv.page(session, filters, limit=size)
    assert page.items and len(page.items) <= size


def test_a_page_over_http_costs_the_same_statements_at_1_and_at_500(views) -> None:  # type: ignore[no-untyped-def]
    engine = views.controller.engine
    h = {"Authorization": f"Bearer {views.tokens['viewer']}"}
    with httpx.Client(base_url=views.url, headers=h, timeout=60) as http:
        http.get("/api/v1/devices", params={"limit": 1})  # warm: nothing first-time in the count
        small = _statements(engine, lambda: http.get("/api/v1/devices", params={"limit": 1}).raise_for_status())
        big = _statements(engine, lambda: http.get("/api/v1/devices", params={"limit": 500}).raise_for_status())
    assert small == big, (small, big)
