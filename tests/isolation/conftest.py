"""A live controller (broker, uvicorn on loopback) with two devices, each deployed its own model.

``fleet`` is module-scoped: dev-a runs digits 1.0 (control), dev-b digits 2.0, and digits 3.0
is pushed but assigned to nobody. Tokens: ``fleet.device["dev-a"]``, ``fleet.user["viewer"]``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlmodel import select

from edgefleet.cloud.api.routes.tokens import create_token
from edgefleet.cloud.auth import ROLES
from edgefleet.cloud.broker import EmbeddedBroker
from edgefleet.cloud.tables import ModelVersion
from edgefleet.protocols import Event, ModelOutput, encode
from tests.conftest import Stack, start_stack


@dataclass
class Fleet:
    stack: Stack
    device: dict[str, str]  # device id → device token
    user: dict[str, str]  # role → API token
    models: dict[str, ModelVersion] = field(default_factory=dict)  # version → row

    @property
    def url(self) -> str:
        return self.stack.url

    def get(self, path: str, token: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {token}", **kw.pop("headers", {})},
                         timeout=30, **kw)

    def target_path(self, version: str) -> str:
        """The consistent-snapshot URL path of a version's signed image target."""
        mv = self.models[version]
        assert mv.target_name, mv
        dirname, _, basename = mv.target_name.rpartition("/")
        return f"/tuf/image/targets/{dirname}/{mv.digest}.{basename}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, digit_models) -> Iterator[Fleet]:  # type: ignore[no-untyped-def]
    broker = EmbeddedBroker()
    broker.start()
    stack = start_stack(tmp_path_factory.mktemp("isolation") / "controller", broker)
    try:
        control, _ = digit_models
        manifest = control.manifest.model_dump(mode="json", by_alias=True)
        for version in ("1.0", "2.0", "3.0"):
            # the manifest inside the bundle names the version: each version has its own digest
            stack.client.push_model(control.path, name="digits", version=version, manifest={**manifest, "version": version})
        devices = {d: stack.client.enrol_device(d, "cpu-x86_64")["token"] for d in ("dev-a", "dev-b")}
        stack.client.deploy("digits:1.0", "control", ["dev-a"])
        stack.client.deploy("digits:2.0", "control", ["dev-b"])
        with stack.controller.session() as s:
            users = {role: create_token(s, f"{role}-iso", role)[1] for role in ROLES}
            models = {mv.version: mv for mv in s.exec(select(ModelVersion).where(ModelVersion.name == "digits")).all()}
        yield Fleet(stack, devices, users, models)
    finally:
        stack.stop()
        broker.stop()


def upload_clip(url: str, device_id: str, token: str, clip: bytes, keyframe: bytes) -> dict[str, Any]:
    """Upload one event with a clip and a keyframe through the real upload API; returns the status."""
    event = Event(device_id=device_id, event_id=uuid.uuid4().hex, trigger="disagreement",
                  control=ModelOutput(label="3", score=0.4), candidate=ModelOutput(label="8", score=0.7), frame_index=1)
    h = {"Authorization": f"Bearer {token}"}
    body = {"event": json.loads(encode(event)),
            "clip": {"size": len(clip), "sha256": hashlib.sha256(clip).hexdigest(), "content_type": "video/webm"},
            "keyframe": {"size": len(keyframe), "sha256": hashlib.sha256(keyframe).hexdigest(), "content_type": "image/jpeg"}}
    base = url + "/api/v1/uploads"
    with httpx.Client(headers=h, timeout=30) as c:
        r = c.post(base, json=body)
        assert r.status_code == 200, r.text
        uid = r.json()["upload_id"]
        for part, data in (("clip", clip), ("keyframe", keyframe)):
            r = c.put(f"{base}/{uid}/{part}", content=data, headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
            assert r.status_code == 200, r.text
        r = c.post(f"{base}/{uid}/complete")
        assert r.status_code == 200, r.text
        return r.json()
