"""A controller (SQLite in tmp) served by real uvicorn on loopback, with one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from edgefleet.cloud import catalog
from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.devices.fleet import enrol_device
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings


@dataclass
class Server:
    url: str
    controller: Controller
    app: object
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, digit_models) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    # these tests send hundreds of wrong tokens from one address on purpose: throttling
    # (tests/isolation/test_auth_throttle.py) would turn their 401s into 429s
    settings = load_settings(tmp_path_factory.mktemp("roles"), env={}, http_port=free_port(), auth_max_failures=100_000)
    controller = Controller(settings)
    controller.migrate()
    control, _ = digit_models
    with controller.session() as s:
        tokens = {role: create_token(s, f"{role}-user", role)[1] for role in ROLES}
        catalog.push_model(s, controller.store, control.path.read_bytes(), name="digits", version="1.0",
                           manifest=control.manifest.model_dump(mode="json", by_alias=True))
        enrol_device(s, "cam-1", "jetson-orin-nano", {"site": "a"})
    app = create_app(controller)
    http = UvicornThread(app, settings.http_host, settings.http_port)
    http.start()
    yield Server(settings.base_url, controller, app, tokens)
    http.stop()
    controller.engine.dispose()
