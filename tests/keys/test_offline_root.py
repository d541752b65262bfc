"""Root kept offline: the controller serves and signs rollouts on its online keys; a rotation
without the offline root fails naming where the key is expected; with ``--root-dir`` it
succeeds, the private key never reaches the controller, and a running agent follows."""

from __future__ import annotations

import json
from pathlib import Path

from ..conftest import push, start_stack, wait_until
from .conftest import fleet


def _installed(stack, device: str, slot: str) -> str | None:  # type: ignore[no-untyped-def]
    return stack.client.get_device(device)["slots"][slot]["installed"]


def test_offline_root_serves_rollouts_and_rotation_needs_the_offline_dir(tmp_path: Path, broker, agents, digit_models) -> None:  # type: ignore[no-untyped-def]
    home, usb = tmp_path / "controller", tmp_path / "usb"
    code, out = fleet("keys", "init", "--data-dir", home, "--offline-dir", usb)
    assert code == 0, out
    assert sorted(p.name.split("-")[1] for p in usb.iterdir()) == ["root", "root"]
    assert not [p for p in (home / "keys").iterdir() if "-root-" in p.name]
    parked = tmp_path / "safe"
    usb.rename(parked)  # the medium is unplugged while the controller runs

    stack = start_stack(home, broker)
    try:
        control, candidate = digit_models
        push(stack, control)
        push(stack, candidate)
        agents(stack, "cam-1")
        stack.client.deploy("digits:1.0", "control", ["cam-1"])
        wait_until(lambda: _installed(stack, "cam-1", "control") == "digits:1.0", timeout=60, message="v1 installed")

        auth = ("--url", stack.url, "--token", stack.token, "--data-dir", home)
        code, out = fleet("keys", "rotate", "snapshot", *auth)
        assert code == 1, out
        assert "needs the image root key" in out and f"offline dir {usb} (absent)" in out and "--root-dir" in out, out
        code, out = fleet("keys", "rotate", "root", "--root-dir", usb, *auth)
        assert code == 1 and f"expected at {usb}/image-root-" in out and "(absent)" in out, out

        before = json.loads(stack.controller.trust.roots().image)["signed"]["version"]
        code, out = fleet("keys", "rotate", "root", "--root-dir", parked, *auth)
        assert code == 0, out
        code, out = fleet("keys", "rotate", "snapshot", "--root-dir", parked, *auth)
        assert code == 0, out
        image_root = json.loads(stack.controller.trust.roots().image)["signed"]
        assert image_root["version"] == before + 2
        assert len(list(parked.glob("image-root-*.pem"))) == 2  # the new root key went offline too
        keyring = json.loads((home / "keys" / "keyring.json").read_text())
        root_key = keyring["repos"]["image"]["root"]["keys"][0]
        assert root_key["uri"] is None and root_key["location"]["dir"] == str(parked)
        assert image_root["roles"]["root"]["keyids"] == [root_key["keyid"]]
        assert not [p for p in (home / "keys").iterdir() if "-root-" in p.name]

        # the agent walks root v1 → v3 and trusts the new snapshot key: it installs the next model
        stack.client.deploy("digits:2.0", "shadow", ["cam-1"])
        wait_until(lambda: _installed(stack, "cam-1", "shadow") == "digits:2.0", timeout=60,
                   message="v2 installed after root and snapshot rotation")

        rows = stack.client.request("GET", "/audit", params={"action": "keys.", "limit": 100})
        rotations = [r for r in rows if r["action"] == "keys.rotate"]
        assert {r["target"] for r in rotations} == {"root", "snapshot"}
        assert all(f"offline dir {parked}" in r["summary"]["body"]["root_location"] for r in rotations)
        blob = json.dumps(rows)
        assert "PRIVATE KEY" not in blob
    finally:
        stack.stop()


def test_resign_root_with_the_offline_dir_extends_expiry(tmp_path: Path, broker) -> None:  # type: ignore[no-untyped-def]
    home, usb = tmp_path / "controller", tmp_path / "usb"
    assert fleet("keys", "init", "--data-dir", home, "--offline-dir", usb)[0] == 0
    stack = start_stack(home, broker)
    try:
        auth = ("--url", stack.url, "--token", stack.token, "--data-dir", home)
        v1 = json.loads(stack.controller.trust.roots().director)["signed"]["version"]
        parked = tmp_path / "safe"
        usb.rename(parked)
        code, out = fleet("keys", "resign-root", "--repo", "director", *auth)
        assert code == 1 and f"expected at {usb}/director-root-" in out and "(absent)" in out, out
        code, out = fleet("keys", "resign-root", "--repo", "director", "--root-dir", parked, *auth)
        assert code == 0 and "director" in out, out
        assert json.loads(stack.controller.trust.roots().director)["signed"]["version"] == v1 + 1
        assert json.loads(stack.controller.trust.roots().image)["signed"]["version"] == 1
        actions = [r["action"] for r in stack.client.request("GET", "/audit", params={"action": "keys."})]
        assert "keys.resign" in actions
    finally:
        stack.stop()
