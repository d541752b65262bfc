"""``yank.plan_moves``, the pure core of ``fleet model yank``: where each device goes."""

from __future__ import annotations

import pytest

from edgefleet.cloud.yank import OnVersion, plan_moves
from edgefleet.protocols import ModelRef


def ref(version: str) -> ModelRef:
    return ModelRef(name="digits", version=version, digest=(version.replace(".", "") * 64)[:64])


BAD, A, B, GONE = ref("6.6"), ref("1.0"), ref("2.0"), ref("9.9")
CATALOG = {BAD.digest: "blocked", A.digest: "active", B.digest: "deprecated"}  # GONE: not in the catalog


@pytest.mark.parametrize(("on", "to", "target", "source"), [
    (OnVersion("d", "control", BAD, A, B), None, A, "last known good"),
    (OnVersion("d", "control", BAD, None, B), None, B, "rollout previous"),          # deprecated: usable
    (OnVersion("d", "control", BAD, GONE, A), None, A, "rollout previous"),          # lkg not in the catalog
    (OnVersion("d", "control", BAD, BAD, A), None, A, "rollout previous"),           # lkg is the yanked one
    (OnVersion("d", "control", A, B, None), None, A, "runs now"),                    # assigned it, never installed
    (OnVersion("d", "control", BAD, A, None), B, B, "--to"),
    (OnVersion("d", "shadow", BAD, None, None), None, None, "cleared"),
])
def test_each_device_goes_to_the_first_usable_target(on, to, target, source) -> None:  # type: ignore[no-untyped-def]
    moves, attention = plan_moves(BAD, [on], to, CATALOG)
    assert attention == [] and [(m.target, m.source) for m in moves] == [(target, source)]


def test_a_control_slot_without_a_usable_target_needs_attention_with_what_was_tried() -> None:
    blocked_too = ref("3.0")
    moves, attention = plan_moves(BAD, [OnVersion("d", "control", BAD, blocked_too, GONE), OnVersion("e", "control")],
                                  None, {**CATALOG, blocked_too.digest: "blocked"})
    assert moves == [] and [a.device_id for a in attention] == ["d", "e"]
    assert "digits:3.0 (blocked)" in attention[0].reason and "digits:9.9 (not in the catalog)" in attention[0].reason
    assert "--to" in attention[1].reason
