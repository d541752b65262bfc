"""Fleet views at scale: p99 of one page of ``GET /api/v1/devices`` (and of
``/devices/counts``) at 100,000 devices against the same at 100 devices.

Two real controllers (migrations, their own SQLite database, or PostgreSQL with
``--database-url``), each bulk-seeded with ``tests/device_views/seed.py`` (profiles, sites,
states, slot assignments), each served by uvicorn on loopback and asked over HTTP with a real
viewer token. Per size it times ``--requests`` first pages, pages deep in the fleet (a cursor
from the middle), filtered pages (``state=online&profile=…``) and counts, interleaved.
Goal (issue 14): p99(page at 100,000) / p99(page at 100) <= 2.

    python bench/bench_device_list.py [--big 100000] [--small 100] [--requests 200] [--limit 100]
        [--ui] [--database-url postgresql://USER@HOST:PORT/DB  (PostgreSQL: two fresh databases are made on that server)]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from tests.device_views.seed import PROFILES, device_id, seed  # noqa: E402

from edgefleet.cloud.api import create_app  # noqa: E402
from edgefleet.cloud.api.routes.tokens import create_token  # noqa: E402
from edgefleet.cloud.broker import free_port  # noqa: E402
from edgefleet.cloud.demo.orchestrator import UvicornThread  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402


def fresh_database(server_url: str, name: str) -> str:
    """An empty database ``name`` on the PostgreSQL server of ``server_url`` (dropped first); its URL."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from edgefleet.cloud.db import make_engine

    engine = make_engine(server_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


class Site:
    def __init__(self, n: int, database_url: str | None) -> None:
        env = {"DATABASE_URL": database_url} if database_url else {}
        self.settings = load_settings(Path(tempfile.mkdtemp(prefix=f"bench-views-{n}-")), env=env, http_port=free_port())
        self.controller = Controller(self.settings)
        self.controller.migrate()
        with self.controller.session() as s:
            self.token = create_token(s, "bench-viewer", "viewer")[1]
        t0 = time.perf_counter()
        seed(self.controller.engine, n)
        self.seed_s = time.perf_counter() - t0
        self.n = n
        self.server = UvicornThread(create_app(self.controller), self.settings.http_host, self.settings.http_port)
        self.server.start()
        self.http = httpx.Client(base_url=self.settings.base_url + "/api/v1",
                                 headers={"Authorization": f"Bearer {self.token}"}, timeout=60)
        middle = self.http.get("/devices", params={"limit": 1}).json()  # warm the connection
        assert middle["items"], "seeded fleet is empty"
        self.deep = self._cursor_at(n // 2)

    def _cursor_at(self, i: int) -> str | None:
        # the cursor of the page after device i: walk there with the biggest pages (as a client would)
        cursor = None
        seen = 0
        while seen < i:
            page = self.http.get("/devices", params={"limit": min(1000, i - seen), **({"cursor": cursor} if cursor else {})}).json()
            seen += len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        return cursor

    def time(self, params: dict) -> float:
        t0 = time.perf_counter()
        path = params.pop("_path", "/devices")
        r = self.http.get(self.settings.base_url + path if path.startswith("/ui/") else path, params=params)
        dt = time.perf_counter() - t0
        r.raise_for_status()
        return dt

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.controller.engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--ui", action="store_true", help="also time the fleet page (/ui/fleet: counts and one page)")
    ap.add_argument("--database-url", default=None, help="a PostgreSQL server URL: the bench makes (drops first) the databases "
                    "bench_device_list_small and bench_device_list_big there")
    args = ap.parse_args()
    sites = {}
    for label, n in (("small", args.small), ("big", args.big)):
        url = fresh_database(args.database_url, f"bench_device_list_{label}") if args.database_url else None
        sites[label] = Site(n, url)
        print(f"seeded {n:,} devices in {sites[label].seed_s:.1f} s ({'PostgreSQL' if url else 'SQLite'})")
    kinds = {
        "first page": lambda s: {"limit": args.limit},
        "deep page": lambda s: {"limit": args.limit, **({"cursor": s.deep} if s.deep else {})},
        "filtered page": lambda s: {"limit": args.limit, "state": "online", "profile": PROFILES[1]},
        "counts": lambda s: {"_path": "/devices/counts"},
    }
    if args.ui:
        kinds["fleet page (UI)"] = lambda s: {"_path": "/ui/fleet", "limit": args.limit}
    samples: dict[tuple[str, str], list[float]] = {(k, label): [] for k in kinds for label in sites}
    for _ in range(args.requests):  # interleaved: both sizes see the same machine load
        for kind, params in kinds.items():
            for label, site in sites.items():
                samples[(kind, label)].append(site.time(params(site)))
    print(f"\n{'':14} {'p99 @' + format(args.small, ','):>14} {'p99 @' + format(args.big, ','):>16} {'ratio':>8}")
    for kind in kinds:
        small, big = p99(samples[(kind, "small")]), p99(samples[(kind, "big")])
        goal = "  (goal <= 2)" if "page" in kind and "UI" not in kind else "  (GROUP BY over the whole fleet: grows with it)"
        print(f"{kind:14} {small * 1000:11.2f} ms {big * 1000:13.2f} ms {big / small:8.2f}{goal}")
    print(f"\n{args.requests} requests per kind and size, limit={args.limit}, one page = {args.limit} devices; "
          f"first device {device_id(0)}")
    for site in sites.values():
        site.close()


if __name__ == "__main__":
    main()
