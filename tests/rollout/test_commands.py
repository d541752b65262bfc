"""Operator commands, supersession, durations and specs built from CLI text."""

from __future__ import annotations

import pytest

from edgefleet.cloud.rollout import (
    DurationSyntaxError,
    IllegalTransition,
    RolloutState,
    SpecError,
    apply_command,
    build_spec,
    parse_duration,
    supersede,
)

from .fleetsim import V1, V2

ALL = ["pending", "running", "soaking", "paused", "breached", "rolling_back", "rolled_back",
       "completed", "aborted", "superseded"]
TABLE = {
    # state: {command: resulting state or None for refused}
    "pending": {"pause": "paused", "resume": "pending", "abort": "aborted", "rollback": "rolling_back"},
    "running": {"pause": "paused", "resume": "running", "abort": "aborted", "rollback": "rolling_back"},
    "soaking": {"pause": "paused", "resume": "soaking", "abort": "aborted", "rollback": "rolling_back"},
    "paused": {"pause": "paused", "resume": "soaking", "abort": "aborted", "rollback": "rolling_back"},
    "breached": {"pause": "breached", "resume": "running", "abort": "aborted", "rollback": "rolling_back"},
    "rolling_back": {"pause": None, "resume": None, "abort": None, "rollback": "rolling_back"},
    "rolled_back": {"pause": None, "resume": None, "abort": None, "rollback": "rolled_back"},
    "completed": {"pause": None, "resume": None, "abort": None, "rollback": "rolling_back"},
    "aborted": {"pause": None, "resume": None, "abort": "aborted", "rollback": "rolling_back"},
    "superseded": {"pause": None, "resume": None, "abort": None, "rollback": None},
}


@pytest.mark.parametrize("state,command", [(s, c) for s in ALL for c in TABLE[s]])
def test_command_table(state, command):
    st = RolloutState(rollout_id="r1", state=state, paused_from="soaking" if state == "paused"
                      else None, soak_started_at=50.0, superseded_by="r2"
                      if state == "superseded" else None)
    expected = TABLE[state][command]
    if expected is None:
        with pytest.raises(IllegalTransition) as info:
            apply_command(st, command, 100.0)
        assert command in str(info.value) and state in str(info.value)
        return
    after = apply_command(st, command, 100.0)
    assert after.state == expected
    assert apply_command(after, command, 200.0).state == expected or command == "resume"


def test_resume_after_breach_soaks_the_wave_again():
    st = RolloutState(rollout_id="r1", state="breached", soak_started_at=50.0)
    assert apply_command(st, "resume", 100.0).soak_started_at is None


def test_unknown_command_is_refused():
    with pytest.raises(IllegalTransition, match="known: pause, resume, abort, rollback"):
        apply_command(RolloutState(rollout_id="r1", state="running"), "restart", 0.0)


def test_supersede_is_idempotent_and_exclusive():
    st = supersede(RolloutState(rollout_id="r1", state="running"), "r2", 10.0)
    assert (st.state, st.superseded_by, st.finished_at) == ("superseded", "r2", 10.0)
    assert supersede(st, "r2", 20.0) == st
    with pytest.raises(IllegalTransition, match="already superseded by r2"):
        supersede(st, "r3", 20.0)


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90.0), ("30m", 1800.0), ("1h30m", 5400.0), ("2d", 172800.0), ("250ms", 0.25),
    ("45", 45.0), (12, 12.0), ("1.5h", 5400.0), ("0", 0.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "10x", "1h 30", "-5", "30m1", "inf"])
def test_bad_durations(text):
    with pytest.raises(DurationSyntaxError):
        parse_duration(text)


def test_spec_from_cli_text():
    spec = build_spec(id="r1", model=V2, slot="shadow", select="tag:depot=7,hw:orin-agx",
                      waves="1,10,50,100", soak="30m", gates=["agreement>=0.97"],
                      on_breach="pause", device_timeout="1h", max_concurrent=20, previous=V1)
    assert (spec.slot, spec.soak_s, spec.device_timeout_s, spec.max_concurrent) == (
        "shadow", 1800.0, 3600.0, 20)
    assert str(spec.selector) == "tag:depot=7,hw:orin-agx"
    assert [str(g) for g in spec.gates] == ["agreement>=0.97"]
    default = build_spec(id="r2", model=V2, slot="control", select="all")
    assert [str(g) for g in default.gates] == ["failure<=0.02"]
    assert default.on_breach == "rollback"


@pytest.mark.parametrize("kw,message", [
    ({"slot": "main"}, "slot must be one of control, shadow"),
    ({"on_breach": "ignore"}, "on_breach must be"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"device_timeout": "0s"}, "device timeout"),
    ({"select": "hw:"}, "missing hardware profile"),
    ({"waves": "50,10"}, "must increase"),
])
def test_bad_spec_is_refused(kw, message):
    args = dict(id="r1", model=V2, slot="control", select="all")
    args.update(kw)
    with pytest.raises(SpecError) as info:
        build_spec(**args)
    assert message in str(info.value)
