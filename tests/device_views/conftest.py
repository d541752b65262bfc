"""A controller (SQLite in tmp) with a bulk-seeded fleet of ``N`` devices (seed.py), served
by real uvicorn on loopback, one API token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.client import ApiClient
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

from .seed import seed

N = 230  # a few pages of every size the tests use, and every combination of the seed's facts


@dataclass
class Views:
    url: str
    controller: Controller
    tokens: dict[str, str]
    app: object

    def client(self, role: str = "viewer") -> ApiClient:
        return ApiClient(self.url, self.tokens[role])


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Views]:
    settings = load_settings(tmp_path_factory.mktemp("views"), env={}, http_port=free_port(), auth_max_failures=100_000)
    controller = Controller(settings)
    controller.migrate()
    with controller.session() as s:
        tokens = {role: create_token(s, f"{role}-user", role)[1] for role in ROLES}
    seed(controller.engine, N)
    app = create_app(controller)
    server = UvicornThread(app, settings.http_host, settings.http_port)
    server.start()
    yield Views(settings.base_url, controller, tokens, app)
    server.stop()
    controller.engine.dispose()
