"""Offline bundles: `fleet bundle export` → `fleet-agent install-offline`, with no link at all.

The device verifies the bundle with its own trusted roots and the online code path, so the
refusals carry the online codes; what it installed reaches the controller in the signed
``reported`` once the agent reconnects.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app
from edgefleet.edge_agent.config import AgentConfig
from edgefleet.edge_agent.errors import OfflineRefused
from edgefleet.edge_agent.offline import install_offline
from edgefleet.edge_agent.state import StateStore
from tests.conftest import device_credentials, push, slot_of, wait_until, write_roots

HW = "cpu-x86_64"
runner = CliRunner()


def _device_config(tmp_path: Path, stack: Any, device_id: str) -> AgentConfig:
    """An agent config whose controller and broker cannot be reached: nothing may need them."""
    return AgentConfig.model_validate({
        "agent": {"device_id": device_id, "data_dir": str(tmp_path / "agents" / device_id),
                  "controller_url": "http://127.0.0.1:9", "hardware_id": HW,
                  "trust_roots": str(write_roots(stack, tmp_path / "roots"))},
        "mqtt": {"host": "127.0.0.1", "port": 9},
    })


def _export(stack: Any, device_id: str, out: Path) -> Path:
    res = runner.invoke(fleet_app, ["bundle", "export", "--device", device_id, str(out),
                                    "--url", stack.url, "--token", stack.token])
    assert res.exit_code == 0, res.output
    return out


def _deploy(stack: Any, model: Any, *devices: str) -> dict[str, Any]:
    m = push(stack, model)
    stack.client.deploy(f"{model.manifest.name}:{model.manifest.version}", "control", list(devices))
    return m


def _installed(cfg: AgentConfig) -> Any:
    return StateStore(cfg.agent.data_dir).load().slot("control").installed


def test_offline_install_without_any_link_then_reported_on_reconnect(stack, agents, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    creds = device_credentials(stack, "truck-1", HW)
    _deploy(stack, control, "truck-1")
    archive = _export(stack, "truck-1", tmp_path / "truck-1.tar")
    cfg = _device_config(tmp_path, stack, "truck-1")

    result = install_offline(cfg, archive)

    assert result.installed["control"] == control.manifest.label and result.changed == ["control"]
    assert _installed(cfg).version == control.manifest.version
    # installing the same bundle again changes nothing
    assert install_offline(cfg, archive).changed == []
    # the agent comes online (same data dir): the controller sees the model it installed offline
    ra = agents(stack, "truck-1", token=creds["token"], mqtt_password=creds["mqtt_password"],
                data_dir=cfg.agent.data_dir, hardware_id=HW)
    wait_until(lambda: slot_of(stack, "truck-1")["installed"] == control.manifest.label,
               timeout=30, message="controller shows the offline-installed version")
    size = result.manifest["targets"][0]["length"]
    assert ra.agent.verifier.fetcher.stats.bytes_received < size  # metadata only: the bundle was not fetched again
    entries = stack.client.audit_entries(action="device.offline_bundle")
    assert [e["target"] for e in entries] == ["truck-1"]


def test_tampered_bundle_is_refused_and_nothing_lost(stack, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    device_credentials(stack, "truck-1", HW)
    _deploy(stack, control, "truck-1")
    out = _export(stack, "truck-1", tmp_path / "bundle")
    cfg = _device_config(tmp_path, stack, "truck-1")
    # signed metadata edited on the stick: refused before a byte of the bundle is read
    targets = max((out / "director").glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    doc = json.loads(targets.read_text())
    doc["signed"]["x-edgefleet"]["hardware_id"] = "orin-nx"
    saved = targets.read_text()
    targets.write_text(json.dumps(doc))
    with pytest.raises(OfflineRefused) as exc:
        install_offline(cfg, out)
    assert exc.value.code == "E_METADATA_MISMATCH"  # the snapshot pins the targets file's hashes
    targets.write_text(saved)
    timestamp = out / "director" / "timestamp.json"
    saved_ts = timestamp.read_text()
    doc = json.loads(saved_ts)
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    timestamp.write_text(json.dumps(doc))
    with pytest.raises(OfflineRefused) as exc:
        install_offline(cfg, out)
    assert exc.value.code == "E_SIGNATURE"
    timestamp.write_text(saved_ts)

    # the bundle's bytes changed: the signed hashes do not match
    target = next((out / "image" / "targets").rglob("*.tar"))
    good = target.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    target.write_bytes(bytes(bad))
    with pytest.raises(OfflineRefused) as exc:
        install_offline(cfg, out)
    assert exc.value.code == "E_HASH_MISMATCH"
    assert _installed(cfg) is None
    assert StateStore(cfg.agent.data_dir).load().slot("control").failed_digest is None  # not marked failed for good

    target.write_bytes(good)
    assert install_offline(cfg, out).changed == ["control"]


def test_expired_metadata_is_refused_by_the_clock_and_by_the_last_trusted_time(stack, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    device_credentials(stack, "truck-1", HW)
    _deploy(stack, control, "truck-1")
    out = _export(stack, "truck-1", tmp_path / "bundle")
    cfg = _device_config(tmp_path, stack, "truck-1")
    later = datetime.now(timezone.utc) + timedelta(days=3650)

    with pytest.raises(OfflineRefused) as exc:
        install_offline(cfg, out, clock=lambda: later)
    assert exc.value.code == "E_EXPIRED"

    # the device once trusted metadata at `later`; a clock set back does not revive this bundle
    trust = cfg.agent.data_dir / "trust" / "trust.json"
    trust.write_text(json.dumps({"last_trusted_time": later.isoformat(), "director_version": 0, "installed": {}}))
    with pytest.raises(OfflineRefused) as exc:
        install_offline(cfg, out)
    assert exc.value.code == "E_CLOCK_ROLLBACK"
    assert _installed(cfg) is None


def test_another_devices_bundle_is_refused(stack, digit_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, _ = digit_models
    device_credentials(stack, "truck-1", HW)
    device_credentials(stack, "truck-2", HW)
    _deploy(stack, control, "truck-1", "truck-2")
    theirs = _export(stack, "truck-2", tmp_path / "truck-2")
    cfg = _device_config(tmp_path, stack, "truck-1")

    with pytest.raises(OfflineRefused) as exc:
        install_offline(cfg, theirs)
    assert exc.value.code == "E_WRONG_DEVICE"
    assert _installed(cfg) is None


def test_export_needs_an_operator_and_a_known_device(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgefleet.cloud.client import ApiClient, ApiError

    device_credentials(stack, "truck-1", HW)
    viewer = ApiClient(stack.url, stack.client.create_token("ro", "viewer")["token"])
    with pytest.raises(ApiError) as exc, open(tmp_path / "x.tar", "wb") as f:
        viewer.offline_bundle("truck-1", f)
    assert exc.value.status_code == 403
    viewer.close()
    res = runner.invoke(fleet_app, ["bundle", "export", "--device", "nobody", str(tmp_path / "n.tar"),
                                    "--url", stack.url, "--token", stack.token])
    assert res.exit_code == 1 and "404" in res.output
    assert not (tmp_path / "n.tar").exists() and not list(tmp_path.glob(".n.tar.*"))
