"""The hardware id is the operator's, not a message field: a forged ``status`` changes nothing;
a signed ``reported`` with another id waits for `fleet device approve-hardware` (shown in
`fleet device ls`), and only then does the director sign for the new hardware."""

from __future__ import annotations

from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app
from edgefleet.cloud.tables import Device
from edgefleet.protocols import Reported, Status, encode, reported_topic, status_topic

from ..conftest import device_credentials, mqtt_client, wait_until
from .keys import SimKey, register

runner = CliRunner()


def _device(stack, device_id: str) -> Device:
    with stack.controller.session() as s:
        device = s.get(Device, device_id)
        assert device is not None
        return device


def _fleet(stack, *args: str) -> str:
    result = runner.invoke(fleet_app, [*args, "--url", stack.url, "--token", stack.token])
    assert result.exit_code == 0, result.output
    return result.output


def test_forged_status_hardware_id_changes_nothing(stack, broker) -> None:
    creds = device_credentials(stack, "cam-h", hardware_id="jetson-orin-nano")
    before = _device(stack, "cam-h")
    # through the broker, with the device's own broker account (what a stolen password allows) …
    c = mqtt_client(broker, creds["mqtt_username"], creds["mqtt_password"], client_id="cam-h")
    try:
        forged = Status(device_id="cam-h", online=True, hardware_id="jetson-xavier-nx")
        c.publish(status_topic("cam-h"), encode(forged), qos=1).wait_for_publish(5)
        wait_until(lambda: _device(stack, "cam-h").online, message="status applied")
    finally:
        c.disconnect()
        c.loop_stop()
    # … and straight into the controller's handler
    assert stack.controller.bridge.handle(status_topic("cam-h"), encode(forged)) == "ok"
    after = _device(stack, "cam-h")
    assert (after.hardware_id, after.hardware_id_reported, after.desired_generation) == \
        ("jetson-orin-nano", None, before.desired_generation)


def test_signed_reported_hardware_change_waits_for_approval(stack, monkeypatch) -> None:
    device_credentials(stack, "cam-a", hardware_id="jetson-orin-nano")
    key = SimKey("cam-a")
    register(stack.controller, key)
    generation = _device(stack, "cam-a").desired_generation
    msg = Reported(device_id="cam-a", generation=generation, hardware_id="jetson-orin-agx")
    assert stack.controller.bridge.handle(reported_topic("cam-a"), key.sign(msg)) == "ok"
    pending = _device(stack, "cam-a")
    assert (pending.hardware_id, pending.hardware_id_reported, pending.desired_generation) == \
        ("jetson-orin-nano", "jetson-orin-agx", generation)  # not applied, director not re-signed
    from edgefleet.cloud.cli.common import console

    monkeypatch.setattr(console, "width", 400)  # one table row per device
    listing = _fleet(stack, "device", "ls")
    assert "jetson-orin-agx" in listing and "not approved" in listing
    assert stack.client.get_device("cam-a")["hardware_id_reported"] == "jetson-orin-agx"

    _fleet(stack, "device", "approve-hardware", "cam-a")
    approved = _device(stack, "cam-a")
    assert (approved.hardware_id, approved.hardware_id_reported) == ("jetson-orin-agx", None)
    assert approved.desired_generation == generation + 1  # new signed metadata for the new hardware
    result = runner.invoke(fleet_app, ["device", "approve-hardware", "cam-a", "--url", stack.url, "--token", stack.token])
    assert result.exit_code != 0 and "no reported hardware id" in result.output


def test_a_device_enrolled_without_hardware_takes_its_first_signed_claim(stack) -> None:
    device_credentials(stack, "cam-u", hardware_id="unknown")
    key = SimKey("cam-u")
    register(stack.controller, key)
    unsigned = Reported(device_id="cam-u", generation=0, hardware_id="jetson-nano")
    assert stack.controller.bridge.handle(reported_topic("cam-u"), encode(unsigned)) == "unsigned"
    assert _device(stack, "cam-u").hardware_id == "unknown"
    signed = key.sign(Reported(device_id="cam-u", generation=0, hardware_id="cpu-x86_64"))
    assert stack.controller.bridge.handle(reported_topic("cam-u"), signed) == "ok"
    assert _device(stack, "cam-u").hardware_id == "cpu-x86_64"
