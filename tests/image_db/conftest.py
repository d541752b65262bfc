"""Controllers' image repositories on a real database (SQLite file or a throwaway PostgreSQL),
each served by the production resolver on loopback HTTP, and python-tuf clients reading them.

``make_controller(root, db_url, blobs, keys_from=…)`` is one controller's trust state:
``Trust.init`` in its data dir, or — a second replica — a copy of another's keys and root
files (``keys_from``), attached to the shared database and blob store. ``client(url, dir,
root)`` is a ``tuf.ngclient.Updater`` on ``/tuf/image/`` — the same python-tuf the agents run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session
from tuf.ngclient import Updater

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.trust.repository import Trust
from edgefleet.registry import LocalBlobStore
from edgefleet.registry.tuf import ImageTarget
from tests.trust.conftest import ServerHooks, start_server

HW = "jetson-orin-nano"


@dataclass
class Ctl:
    root: Path
    engine: Engine
    blobs: LocalBlobStore
    trust: Trust
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def push(self, version: str, data: bytes | None = None) -> ImageTarget:
        digest = self.blobs.put(data or f"bundle {version} ".encode() * 200)
        return self.trust.release(digest, {"name": "digits", "version": version, "hardware_ids": [HW]})

    def serve(self) -> None:
        self.server = start_server(self.trust.resolver(), self.blobs, ServerHooks())

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.engine.dispose()


def make_controller(root: Path, db_url: str, blobs: LocalBlobStore, *, keys_from: Path | None = None,
                    attach: bool = True) -> Ctl:
    """One controller: its own data dir and engine, the shared database and blob store."""
    if keys_from is not None:  # a replica provisioned with the same keys (and root files)
        shutil.copytree(keys_from / "keys", root / "keys")
        shutil.copytree(keys_from / "tuf", root / "tuf")
        trust = Trust.load(root, blobs)
    else:
        root.mkdir(parents=True, exist_ok=True)
        trust = Trust.init(root, blobs)
    engine = make_engine(db_url)
    migrate(engine)
    if attach:
        trust.attach_database(engine)
    return Ctl(root, engine, blobs, trust)


def client(url: str, state: Path, root: bytes) -> Updater:
    """A fresh python-tuf client (one refresh per instance, ngclient's rule) on ``url``'s image
    repository, trusting ``root`` on first use and its own saved metadata afterwards."""
    (state / "md").mkdir(parents=True, exist_ok=True)
    (state / "dl").mkdir(exist_ok=True)
    trusted = state / "md" / "root.json"
    return Updater(str(state / "md"), f"{url}/tuf/image/metadata/", str(state / "dl"), f"{url}/tuf/image/targets/",
                   bootstrap=None if trusted.exists() else root)


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Callable[..., Ctl]]:
    made: list[Ctl] = []
    blobs = LocalBlobStore(tmp_path / "shared-blobs")  # one artifact store for every replica

    def factory(name: str, db_url: str | None = None, **kw: object) -> Ctl:
        c = make_controller(tmp_path / name, db_url or f"sqlite:///{tmp_path / 'edgefleet.db'}", blobs, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()
