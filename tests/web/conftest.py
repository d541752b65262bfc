"""Fixtures of the web/metrics/drift tests: a seeded controller served by real uvicorn on
loopback, and one API token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

from .fleet_data import SeededFleet, seed_fleet


@dataclass
class LiveUI:
    url: str
    controller: Controller
    tokens: dict[str, str]
    fleet: SeededFleet


def start_live(data_dir: Path, digit_models) -> tuple[LiveUI, UvicornThread]:  # type: ignore[no-untyped-def]
    settings = load_settings(data_dir, env={}, http_port=free_port())
    controller = Controller(settings)
    controller.migrate()
    with controller.session() as s:
        tokens = {role: create_token(s, f"{role}-user", role)[1] for role in ROLES}
    control, candidate = digit_models
    seeded = seed_fleet(controller, control.path, candidate.path, control.manifest, candidate.manifest)
    server = UvicornThread(create_app(controller), settings.http_host, settings.http_port)
    server.start()
    return LiveUI(settings.base_url, controller, tokens, seeded), server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, digit_models) -> Iterator[LiveUI]:  # type: ignore[no-untyped-def]
    ui, server = start_live(tmp_path_factory.mktemp("web"), digit_models)
    yield ui
    server.stop()
    ui.controller.engine.dispose()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """Headless Chromium for a module's browser tests (requested only by those tests)."""
    from .browser import launch_chromium

    with launch_chromium() as b:
        yield b


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = context.new_page()
    yield p
    context.close()
