"""The device views on PostgreSQL (a throwaway server, tests/conftest.py ``postgres``): the
same filters, counts and constant statements per page as on SQLite, with migration
0016_device_views applied by ``db.migrate``."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import event, inspect
from sqlmodel import Session

from edgefleet.cloud import db
from edgefleet.cloud.devices import views as dv

from .seed import PROFILES, device_id, expected, seed

N = 150


def test_views_filter_count_and_page_on_postgresql(postgres: str) -> None:
    engine = db.make_engine(postgres)
    try:
        db.migrate(engine)
        assert {"ix_device_views_hardware_id", "ix_device_views_online"} <= {
            i["name"] for i in inspect(engine).get_indexes("device")}
        seed(engine, N)
        facts = {device_id(i): expected(i) for i in range(N)}
        with Session(engine) as s:
            def ids(f: dv.DeviceFilter) -> list[str]:
                out, cursor = [], None
                while True:
                    page = dv.page(s, f, limit=40, cursor=cursor)
                    out += [d.id for d in page.items]
                    cursor = page.next_cursor
                    if not cursor:
                        return out

            assert ids(dv.DeviceFilter()) == sorted(facts)
            assert ids(dv.DeviceFilter(tags=(("site", "dock"),), profile=PROFILES[0])) == sorted(
                d for d, e in facts.items() if e["site"] == "dock" and e["profile"] == PROFILES[0])
            assert ids(dv.DeviceFilter(state="never_seen", stale=False)) == sorted(
                d for d, e in facts.items() if e["state"] == "never_seen" and not e["stale"])
            assert ids(dv.DeviceFilter(models=(("shadow", "digits", "2.0"),),
                                       installed=(("control", "digits", "1.0"),))) == sorted(
                d for d, e in facts.items() if e["shadow"] == "digits:2.0" and e["control"] == "digits:1.0")
            c = dv.counts(s, dv.DeviceFilter(tags=(("site", "lab"),)))
            lab = [e for e in facts.values() if e["site"] == "lab"]
            assert c.total == len(lab) and c.stale == sum(1 for e in lab if e["stale"])
            assert c.by_state == {st: sum(1 for e in lab if e["state"] == st) for st in dv.STATES}
            assert c.by_installed["control"] == dict(sorted(Counter(e["control"] for e in lab).items()))

            costs = []
            for size in (1, 100):
                n = [0]

                def on_execute(*_a: object, n: list[int] = n) -> None:
                    n[0] += 1

                event.listen(engine, "before_cursor_execute", on_execute)
                dv.page(s, dv.DeviceFilter(stale=False), limit=size)
                event.remove(engine, "before_cursor_execute", on_execute)
                costs.append(n[0])
            assert costs[0] == costs[1], costs
    finally:
        engine.dispose()
