"""A controller on real uvicorn (SQLite, local blob store) with the demo's digit models, one
token per role, and captures recorded through the real event and upload paths."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefleet.cloud import catalog
from edgefleet.cloud.api import create_app
from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import free_port
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.devices import fleet
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.protocols import ModelRef

from .seed import Capture, seed_captures

CAPTURES = [  # device, digit shown, control label, candidate label, trigger, ..., age (s)
    Capture("cam-a", 8, "8", "3", age_s=50),
    Capture("cam-a", 8, "8", "3", age_s=40),
    Capture("cam-b", 8, "8", "1", age_s=30),
    Capture("cam-b", 5, "5", "5", trigger="low_confidence", control_score=0.41, candidate_score=0.44, age_s=20),
    Capture("cam-a", 3, "3", "3", trigger="sample", age_s=10),
]


@dataclass
class ReviewServer:
    url: str
    controller: Controller
    tokens: dict[str, str]
    control: ModelRef
    candidate: ModelRef
    event_ids: list[str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, digit_models) -> Iterator[ReviewServer]:  # type: ignore[no-untyped-def]
    root: Path = tmp_path_factory.mktemp("review")
    settings = load_settings(root / "controller", env={}, http_port=free_port())
    controller = Controller(settings)
    controller.migrate()
    refs = []
    with controller.session() as s:
        tokens = {role: create_token(s, f"{role}-user", role)[1] for role in ROLES}
        for model in digit_models:
            m = model.manifest
            mv, _ = catalog.push_model(s, controller.store, model.path.read_bytes(), name=m.name, version=m.version,
                                       manifest=m.model_dump(mode="json", by_alias=True))
            refs.append(ModelRef(name=mv.name, version=mv.version, digest=mv.digest))
        for device_id in ("cam-a", "cam-b"):
            fleet.enrol_device(s, device_id, "cpu-x86_64", {"site": "lab"})
    http = UvicornThread(create_app(controller), settings.http_host, settings.http_port)
    http.start()
    try:
        ids = seed_captures(controller, settings.base_url, refs[0], refs[1], CAPTURES, root / "work")
        yield ReviewServer(settings.base_url, controller, tokens, refs[0], refs[1], ids)
    finally:
        http.stop()
        controller.engine.dispose()
