"""A controller's trust state on a real database (SQLite file or a throwaway PostgreSQL):
keys, the image repository, per-device director metadata in the database, the production
resolver served on loopback HTTP, and devices that verify with python-tuf.

``DirEnv.deploy(model, ids)`` enrols devices and assigns them a model as the fleet code
does; ``DirEnv.sign(ids)`` is ``signing.sign_devices`` in one session; ``DirEnv.device(id)``
is a provisioned ``DeviceVerifier`` reading ``/tuf/director/<id>/`` from the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from edgefleet.cloud.db import make_engine, migrate
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.tables import Device, ModelVersion
from edgefleet.cloud.trust import signing
from edgefleet.cloud.trust.repository import Trust
from edgefleet.registry import LocalBlobStore
from edgefleet.registry.tuf import DeviceVerifier, ResumableFetcher, provision
from tests.trust.conftest import ServerHooks, start_server

HW = "jetson-orin-nano"


@dataclass
class DirEnv:
    root: Path
    engine: Engine
    blobs: LocalBlobStore
    trust: Trust
    server: ThreadingHTTPServer | None = None
    hooks: ServerHooks = field(default_factory=ServerHooks)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def model(self, version: str = "1.0.0", data: bytes | None = None) -> ModelVersion:
        data = data or f"bundle {version}".encode() * 100
        digest = self.blobs.put(data)
        manifest = {"name": "digits", "version": version, "hardware_ids": [HW]}
        target = self.trust.release(digest, manifest)  # as `fleet model push` does
        with self.session() as s:
            mv = ModelVersion(name="digits", version=version, digest=digest, size=len(data), manifest=manifest,
                              target_name=target.name, release_counter=target.release_counter)
            s.add(mv)
            s.commit()
            s.refresh(mv)
            return mv

    def deploy(self, mv: ModelVersion | None, ids: list[str], slot: str = "control") -> None:
        with self.session() as s:
            for d in ids:
                if s.get(Device, d) is None:
                    fleet.enrol(s, d, HW)
            fleet.assign(s, s.get(ModelVersion, mv.id) if mv is not None else None, slot, ids)

    def sign(self, ids: list[str]) -> signing.SignResult:
        with self.session() as s:
            devices = list(s.exec(select(Device).where(Device.id.in_(ids))).all())  # type: ignore[attr-defined]
            return signing.sign_devices(s, self.trust, devices)

    def serve(self) -> None:
        self.server = start_server(self.trust.resolver(), self.blobs, self.hooks)

    def device(self, device_id: str) -> DeviceVerifier:
        state = self.root / f"state-{device_id}"
        if not (state / "trusted" / "image-root.json").exists():
            provision(state, director_root=self.trust.director.root_bytes(1), image_root=self.trust.image.root_bytes(1))
        # generous timeouts: these tests are about what is signed, not fetch latency, and a loaded
        # CI machine (two test workers next to PostgreSQL) has stalled a loopback read past 2 s
        fetcher = ResumableFetcher(gap_timeout=15.0, deadline=60.0, backoff=0.01)
        return DeviceVerifier.for_controller(self.url, device_id, HW, state, fetcher=fetcher)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.engine.dispose()


def make_dir_env(root: Path, db_url: str | None = None, *, trust: Trust | None = None) -> DirEnv:
    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db_url or f"sqlite:///{root / 'edgefleet.db'}")
    migrate(engine)
    blobs = LocalBlobStore(root / "blobs")
    trust = trust or Trust.init(root, blobs)
    trust.attach_database(engine)
    return DirEnv(root, engine, blobs, trust)


@pytest.fixture
def dir_env(tmp_path: Path) -> Iterator[DirEnv]:
    e = make_dir_env(tmp_path / "controller")
    e.serve()
    yield e
    e.close()


@pytest.fixture
def dir_env_factory(tmp_path: Path) -> Iterator[Callable[..., DirEnv]]:
    made: list[DirEnv] = []

    def factory(name: str, db_url: str | None = None, **kw: object) -> DirEnv:
        e = make_dir_env(tmp_path / name, db_url, **kw)  # type: ignore[arg-type]
        made.append(e)
        return e

    yield factory
    for e in made:
        e.close()
