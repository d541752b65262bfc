"""End to end on real components: broker, controller HTTP + MQTT bridge, agents, ONNX Runtime."""

from __future__ import annotations

from edgefleet.cloud.broker import EmbeddedBroker
from edgefleet.protocols import Phase

from ..conftest import push, slot_of, start_stack, wait_until


def _active(stack, device_id: str, model: str, slot: str = "control") -> bool:
    s = slot_of(stack, device_id, slot)
    return s["installed"] == model and s["phase"] in (Phase.ACTIVE.value, Phase.HEALTHY.value)


def _inferring(stack, device_id: str) -> bool:
    t = stack.client.get_device(device_id).get("telemetry") or {}
    return t.get("frames", 0) > 0


def test_push_deploy_every_agent_reports_active_and_inferring(stack, agents, digit_models) -> None:
    control, candidate = digit_models
    devices = [agents(stack, f"cam-{i}").device_id for i in range(3)]
    wait_until(lambda: all(stack.client.get_device(d)["online"] for d in devices), message="agents online")
    push(stack, control)
    stack.client.deploy("digits:1.0", "control", None)
    for d in devices:
        wait_until(lambda d=d: _active(stack, d, "digits:1.0"), message=f"{d} active")
        wait_until(lambda d=d: _inferring(stack, d), message=f"{d} inferring")
    push(stack, candidate)
    stack.client.deploy("digits:2.0", "shadow", devices[:1])
    wait_until(lambda: _active(stack, devices[0], "digits:2.0", "shadow"), message="shadow active")

    def shadow_compared() -> bool:
        t = stack.client.get_device(devices[0]).get("telemetry") or {}
        return (t.get("shadow") or {}).get("frames", 0) > 0

    wait_until(shadow_compared, message="shadow frames compared")
    wait_until(lambda: slot_of(stack, devices[0])["phase"] == "healthy", message="control healthy")
    assert slot_of(stack, devices[1], "shadow")["installed"] is None


def test_tampered_bundle_is_refused_and_the_old_model_keeps_running(stack, agents, digit_models) -> None:
    control, candidate = digit_models
    dev = agents(stack, "cam-t").device_id
    push(stack, control)
    stack.client.deploy("digits:1.0", "control", [dev])
    wait_until(lambda: _active(stack, dev, "digits:1.0"), message="control active")
    mv = push(stack, candidate)
    path = stack.controller.store.path(mv["digest"])  # flip bytes in the stored blob, same length
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    stack.client.deploy("digits:2.0", "control", [dev])
    wait_until(lambda: slot_of(stack, dev)["error_code"] == "E_HASH_MISMATCH", message="E_HASH_MISMATCH reported")
    s = slot_of(stack, dev)
    assert s["installed"] == "digits:1.0" and s["phase"] == "failed"
    wait_until(lambda: _inferring(stack, dev), message="old model still inferring")
    assert slot_of(stack, dev)["installed"] == "digits:1.0"


def test_restarted_agent_runs_its_model_without_downloading(stack, agents, digit_models, tmp_path) -> None:
    control, _ = digit_models
    data_dir = tmp_path / "agents" / "cam-r"
    a = agents(stack, "cam-r", data_dir=data_dir)
    token, password = a.agent.config.agent.token, a.agent.config.mqtt.password
    push(stack, control)
    stack.client.deploy("digits:1.0", "control", ["cam-r"])
    wait_until(lambda: _active(stack, "cam-r", "digits:1.0"), message="active")
    a.stop()
    stack.http.stop()  # the controller's HTTP API is gone: no download possible
    b = agents(stack, "cam-r", token=token, mqtt_password=password, data_dir=data_dir)
    wait_until(lambda: b.agent.pipeline.control is not None and b.agent.pipeline.totals.get("frames", 0) > 5, message="restored model inferring")
    assert b.agent.pipeline.control.ref.label == "digits:1.0"


def test_controller_restart_keeps_device_state(tmp_path, broker, agents, digit_models) -> None:
    control, _ = digit_models
    s1 = start_stack(tmp_path / "c", broker)
    agents(s1, "cam-c")
    push(s1, control)
    s1.client.deploy("digits:1.0", "control", ["cam-c"])
    wait_until(lambda: _active(s1, "cam-c", "digits:1.0"), message="active")
    token = s1.token
    s1.stop()
    s2 = start_stack(tmp_path / "c", broker, token=token)
    try:
        d = s2.client.get_device("cam-c")
        assert d["slots"]["control"]["desired"] == "digits:1.0"
        assert d["slots"]["control"]["installed"] == "digits:1.0"
        wait_until(lambda: s2.client.get_device("cam-c")["online"], message="still online after restart")
    finally:
        s2.stop()


def test_broker_restart_is_survived_by_agents_and_controller(tmp_path, agents, digit_models) -> None:
    control, candidate = digit_models
    b1 = EmbeddedBroker(auth_dir=tmp_path / "broker-auth")
    b1.start()
    stack = start_stack(tmp_path / "c", b1)
    try:
        agents(stack, "cam-b")
        push(stack, control)
        stack.client.deploy("digits:1.0", "control", ["cam-b"])
        wait_until(lambda: _active(stack, "cam-b", "digits:1.0"), message="active")
        b1.stop()  # amqtt keeps retained messages in memory only: they are gone now
        b2 = EmbeddedBroker(port=b1.port, auth_dir=b1.auth_dir)  # the accounts survive in the files
        b2.start()
        stack.broker = b2
        wait_until(lambda: stack.controller.bridge.connected.is_set(), timeout=40, message="controller reconnected")
        push(stack, candidate)
        stack.client.deploy("digits:2.0", "shadow", ["cam-b"])
        wait_until(lambda: _active(stack, "cam-b", "digits:2.0", "shadow"), timeout=60, message="new desired applied after broker restart")
        assert slot_of(stack, "cam-b")["installed"] == "digits:1.0"
        b2.stop()
    finally:
        stack.stop()
