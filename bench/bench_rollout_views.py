"""Rollout views at scale: p99 of the rollout list (each row's member count, ``summary``) and
of one page of a rollout's member list (``GET /api/v1/rollouts/{id}/devices``) at 10,000
members against the same at 100 members, in one run.

Two real controllers (migrations, their own SQLite database, or PostgreSQL with
``--database-url``), each bulk-seeded with ``tests/rollout_views/seed.py`` (a fleet of twice
the members; a running rollout whose members are in every status, online and offline), each
served by uvicorn on loopback and asked over HTTP with a real viewer token. Per size it
times, interleaved: the rollout list, the first member page, a page deep in the list (a
cursor from the middle), a wave-filtered page, a status-filtered page (``healthy``: the
status is computed per row, so the reader reads rows until a page is full), and, for
reference, the status with wave counts (``?devices=false``: it classifies every member, so
it grows with the rollout — never with the fleet).
Goal (issue 14): p99(page or list at 10,000) / p99(at 100) <= 2.

    python bench/bench_rollout_views.py [--big 10000] [--small 100] [--requests 200] [--limit 100]
        [--heavy-requests 10] [--database-url postgresql://USER@HOST:PORT/DB  (two fresh databases are made on that server)]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from tests.rollout_views.seed import ROLLOUT, seed_rollout  # noqa: E402

from bench_device_list import fresh_database, p99  # noqa: E402
from edgefleet.cloud.api import create_app  # noqa: E402
from edgefleet.cloud.api.routes.tokens import create_token  # noqa: E402
from edgefleet.cloud.broker import free_port  # noqa: E402
from edgefleet.cloud.demo.orchestrator import UvicornThread  # noqa: E402
from edgefleet.cloud.runtime import Controller  # noqa: E402
from edgefleet.cloud.settings import load_settings  # noqa: E402


class Site:
    def __init__(self, members: int, database_url: str | None, limit: int) -> None:
        env = {"DATABASE_URL": database_url} if database_url else {}
        self.settings = load_settings(Path(tempfile.mkdtemp(prefix=f"bench-rollout-{members}-")), env=env,
                                      http_port=free_port())
        self.controller = Controller(self.settings)
        self.controller.migrate()
        with self.controller.session() as s:
            self.token = create_token(s, "bench-viewer", "viewer")[1]
        t0 = time.perf_counter()
        seed_rollout(self.controller.engine, members)
        self.seed_s = time.perf_counter() - t0
        self.server = UvicornThread(create_app(self.controller), self.settings.http_host, self.settings.http_port)
        self.server.start()
        self.http = httpx.Client(base_url=self.settings.base_url + "/api/v1",
                                 headers={"Authorization": f"Bearer {self.token}"}, timeout=120)
        first = self.get(f"/rollouts/{ROLLOUT}/devices", {"limit": 1})
        assert first["total"] == members, first
        self.deep = self._cursor_at(members // 2)

    def get(self, path: str, params: dict) -> dict:
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def _cursor_at(self, i: int) -> str | None:
        cursor, seen = None, 0
        while seen < i:
            page = self.get(f"/rollouts/{ROLLOUT}/devices", {"limit": min(1000, i - seen), **({"cursor": cursor} if cursor else {})})
            seen += len(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        return cursor

    def time(self, path: str, params: dict) -> float:
        t0 = time.perf_counter()
        r = self.http.get(path, params=params)
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
    ap.add_argument("--big", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--heavy-requests", type=int, default=10, help="samples of the two kinds that read every "
                    "member (status page, status+counts)")
    ap.add_argument("--database-url", default=None, help="a PostgreSQL server URL: the bench makes (drops first) "
                    "the databases bench_rollout_views_small and bench_rollout_views_big there")
    args = ap.parse_args()
    sites = {}
    for label, n in (("small", args.small), ("big", args.big)):
        url = fresh_database(args.database_url, f"bench_rollout_views_{label}") if args.database_url else None
        sites[label] = Site(n, url, args.limit)
        print(f"seeded {n:,} members ({2 * n:,} devices) in {sites[label].seed_s:.1f} s ({'PostgreSQL' if url else 'SQLite'})")
    devices = f"/rollouts/{ROLLOUT}/devices"
    kinds = {
        "rollout list": lambda s: ("/rollouts", {}),
        "first page": lambda s: (devices, {"limit": args.limit}),
        "deep page": lambda s: (devices, {"limit": args.limit, **({"cursor": s.deep} if s.deep else {})}),
        "wave page": lambda s: (devices, {"limit": args.limit, "wave": 2}),
        "status page": lambda s: (devices, {"limit": args.limit, "status": "healthy"}),
        "status+counts": lambda s: (f"/rollouts/{ROLLOUT}", {"devices": "false", "events": 0}),
    }
    samples: dict[tuple[str, str], list[float]] = {(k, label): [] for k in kinds for label in sites}
    heavy = ("status page", "status+counts")
    for i in range(args.requests):  # interleaved: both sizes see the same machine load
        for kind, what in kinds.items():
            if kind in heavy and i >= args.heavy_requests:
                continue
            for label, site in sites.items():
                samples[(kind, label)].append(site.time(*what(site)))
    print(f"\n{'':14} {'p99 @' + format(args.small, ','):>14} {'p99 @' + format(args.big, ','):>16} {'ratio':>8}")
    for kind in kinds:
        small, big = p99(samples[(kind, "small")]), p99(samples[(kind, "big")])
        goal = ("  (goal <= 2)" if kind in ("rollout list", "first page", "deep page", "wave page")
                else "  (total: counts every healthy member)" if kind == "status page"
                else "  (classifies every member: grows with the rollout)")
        print(f"{kind:14} {small * 1000:11.2f} ms {big * 1000:13.2f} ms {big / small:8.2f}{goal}")
    print(f"\n{args.requests} requests per kind and size ({args.heavy_requests} for {' and '.join(heavy)}), "
          f"limit={args.limit}")
    for site in sites.values():
        site.close()


if __name__ == "__main__":
    main()
