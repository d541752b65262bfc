"""Device history, tags and inventory on a real controller (and one real agent)."""

from __future__ import annotations

import platform

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from edgefleet.cloud import audit
from edgefleet.cloud.cli import app as fleet_cli
from edgefleet.cloud.client import ApiError
from edgefleet.cloud.rollout import parse_selector
from edgefleet.cloud.tables import Device

from ..conftest import push, slot_of, wait_until
from ..rollout_e2e import candidates


def test_history_tells_the_install_then_local_rollback_story_of_one_device(stack, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    dev = agents(stack, "cam-story", fps=10.0).device_id
    push(stack, candidates.retag(digit_models[0], "1.0"))
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["phase"] == "healthy", message="1.0 healthy")
    push(stack, candidates._with(digit_models[0], digit_models[0].path, "1.1-tight", latency_budget_ms=0.001))
    stack.client.deploy("digits:1.1-tight", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_HEALTH_LATENCY", message="local rollback")

    entries = stack.client.device_history(dev, limit=500)["entries"]
    kinds = [e["kind"] for e in entries]
    text = [f"{e['kind']}: {e['message']}" for e in entries]
    times = [e["at"] for e in entries]
    assert times == sorted(times)
    assert kinds[0] == "audit" and entries[0]["message"] == "device.enrol"

    def first(pred) -> int:  # type: ignore[no-untyped-def]
        return next(i for i, e in enumerate(entries) if pred(e))

    want_10 = first(lambda e: e["kind"] == "desired" and e["data"]["model"] == "digits:1.0")
    signed_10 = first(lambda e: e["kind"] == "signed" and e["data"]["slots"].get("control"))
    healthy_10 = first(lambda e: e["kind"] == "phase" and e["data"]["to"] == "healthy")
    want_11 = first(lambda e: e["kind"] == "desired" and e["data"]["model"] == "digits:1.1-tight")
    active_11 = first(lambda e: e["kind"] == "phase" and e["data"]["to"] == "active" and i_after(e, want_11, entries))
    rollback = first(lambda e: e["kind"] == "rollback")
    assert want_10 < signed_10 < healthy_10 < want_11 < active_11 < rollback, "\n".join(text)
    rb = entries[rollback]
    assert rb["slot"] == "control" and rb["data"]["error_code"] == "E_HEALTH_LATENCY"
    assert rb["data"]["installed"] == "digits:1.0" and "rolled back locally to digits:1.0" in rb["message"]
    assert "downloading" in [e["data"].get("to") for e in entries if e["kind"] == "phase"]
    assert [e for e in entries if e["kind"] == "audit" and e["message"] == "deploy"]  # who deployed, from the audit log

    # paging: since is exclusive, pages join up without gaps or repeats
    page1 = stack.client.device_history(dev, limit=3)
    page2 = stack.client.device_history(dev, limit=500, since=page1["next_since"])
    assert page1["next_since"] and [e["message"] for e in page1["entries"] + page2["entries"]] == \
        [e["message"] for e in entries]
    only = stack.client.device_history(dev, kinds=["rollback"])["entries"]
    assert [e["kind"] for e in only] == ["rollback"]

    result = CliRunner().invoke(fleet_cli, ["device", "history", dev, "--url", stack.url, "--token", stack.token,
                                            "--kind", "rollback"])
    assert result.exit_code == 0, result.output
    assert "rollback" in result.output and "E_HEALTH_LATENCY" in result.output

    # the agent's inventory, signed in its reported
    inv = stack.client.device_inventory(dev)["inventory"]
    assert inv["python"] == platform.python_version() and inv["onnxruntime"]
    assert "CPUExecutionProvider" in inv["providers"] and inv["disk_total_bytes"] > inv["disk_free_bytes"] > 0
    assert inv["memory_total_bytes"] > 0
    html = stack.client.http.get(stack.url + f"/ui/devices/{dev}", cookies=None,
                                 headers={"Authorization": f"Bearer {stack.token}"})
    assert html.status_code == 200 and "CPUExecutionProvider" in html.text and "E_HEALTH_LATENCY" in html.text


def i_after(e: dict, index: int, entries: list[dict]) -> bool:
    return entries.index(e) > index


def test_tag_changes_are_validated_audited_and_seen_by_selectors_at_once(stack) -> None:  # type: ignore[no-untyped-def]
    for dev in ("tag-a", "tag-b"):
        stack.client.enrol_device(dev, "cpu-x86_64", {"ring": "stable"})
    canary = parse_selector("tag:ring=canary")

    def matching() -> list[str]:
        with stack.controller.session() as s:
            return [d.device_id for d in canary.select(_devices(s))]

    assert matching() == []
    res = stack.client.tag_device("tag-b", {"ring": "canary", "depot": "7"})
    assert res["tags"] == {"ring": "canary", "depot": "7"} and res["changed"] == {"ring": "canary", "depot": "7"}
    assert matching() == ["tag-b"]
    res = stack.client.tag_device("tag-b", remove=["depot"])
    assert res["tags"] == {"ring": "canary"} and res["changed"] == {"depot": None}
    assert stack.client.get_device("tag-b")["tags"] == {"ring": "canary"}
    result = CliRunner().invoke(fleet_cli, ["device", "tag", "tag-a", "ring=canary", "--rm", "missing",
                                            "--url", stack.url, "--token", stack.token])
    assert result.exit_code == 0, result.output
    assert sorted(matching()) == ["tag-a", "tag-b"]

    for bad in ({"set": {"bad key": "x"}}, {"set": {"k": "has space"}}, {"set": {"k": "a,b"}},
                {"set": {"k": "x" * 129}}, {"remove": ["../etc"]}):
        with pytest.raises(ApiError) as err:
            stack.client.request("PATCH", "/devices/tag-a/tags", json=bad)
        assert err.value.status_code == 422, bad
    with pytest.raises(ApiError) as err:
        stack.client.tag_device("tag-a", {"ring": "x"}, ["ring"])
    assert err.value.status_code == 400 and "both set and removed" in err.value.detail
    with pytest.raises(ApiError) as err:
        stack.client.tag_device("nobody", {"ring": "x"})
    assert err.value.status_code == 404
    assert stack.client.get_device("tag-a")["tags"] == {"ring": "canary"}  # bad input lost nothing

    with stack.controller.session() as s:
        tagged = s.exec(select(audit.AuditEntry).where(audit.AuditEntry.action == "device.tag")).all()
    assert [e.target for e in tagged] == ["tag-b", "tag-b", "tag-a"]
    hist = stack.client.device_history("tag-b", kinds=["tags"])["entries"]
    assert [e["message"] for e in hist] == ["tags: depot=7, ring=canary", "tags: -depot"]


def _devices(session):  # type: ignore[no-untyped-def]
    from edgefleet.cloud.rollout.selector import DeviceInfo

    return [DeviceInfo(d.id, d.hardware_id, dict(d.tags)) for d in session.exec(select(Device)).all()]
