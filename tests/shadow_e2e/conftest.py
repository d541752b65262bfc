"""Helpers for the capture end-to-end tests: deploy the digit pair, read the clip index."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from edgefleet.cloud.shadow_index import Clip, ShadowEvent
from edgefleet.protocols import CapturePolicy
from tests.conftest import Stack, push, wait_until

# Disagreements only, a generous budget, short clips: fast and deterministic enough for tests.
TEST_POLICY = CapturePolicy(low_confidence=False, disagreement=True, max_per_minute=120, max_per_hour=1000,
                            pre_seconds=1.0, post_seconds=0.5)


def deploy_pair(stack: Stack, digit_models: Any, timeout: float = 60.0) -> tuple[str, str]:
    control, candidate = digit_models
    push(stack, control)
    push(stack, candidate)
    stack.client.deploy(control.manifest.label, "control", None)
    stack.client.deploy(candidate.manifest.label, "shadow", None)

    def active() -> bool:
        devices = stack.client.list_devices()
        return bool(devices) and all(
            d["slots"]["control"]["installed"] == control.manifest.label
            and d["slots"]["shadow"]["installed"] == candidate.manifest.label for d in devices
        )

    wait_until(active, timeout, message="control and candidate active on every device")
    return control.manifest.label, candidate.manifest.label


def events(stack: Stack) -> list[ShadowEvent]:
    with stack.controller.session() as s:
        return list(s.exec(select(ShadowEvent)).all())


def clips(stack: Stack) -> list[Clip]:
    with stack.controller.session() as s:
        return list(s.exec(select(Clip)).all())
