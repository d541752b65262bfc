"""``fleet keys status`` for each place a key can live, ``GET /api/v1/trust/keys``, key
initialisation before or after ``fleet cloud init``, and key files at 0600 / 0700 — a key
file made group/world readable is reported by status and tightened (with a WARNING) when
the controller starts."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings

from .conftest import fleet


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _status(home: Path) -> dict:
    code, out = fleet("keys", "status", "--data-dir", home, "--json")
    assert code == 0, out
    return json.loads(out)


def _where(doc: dict, repo: str, role: str) -> list[str]:
    return [k["where"] for r in doc["roles"] if (r["repo"], r["role"]) == (repo, role) for k in r["keys"]]


def test_status_names_each_place_a_key_lives(tmp_path: Path) -> None:
    plain, off, enc = tmp_path / "plain", tmp_path / "off", tmp_path / "enc"
    assert fleet("keys", "init", "--data-dir", plain, "--root-threshold", "2", "--root-keys", "3")[0] == 0
    assert fleet("keys", "init", "--data-dir", off, "--offline-dir", tmp_path / "usb")[0] == 0
    (tmp_path / "p").write_text("s3cret")
    assert fleet("keys", "init", "--data-dir", enc, "--passphrase-file", tmp_path / "p")[0] == 0

    doc = _status(plain)
    assert _where(doc, "image", "root") == ["data dir (online, 0600)"] * 3
    row = next(r for r in doc["roles"] if (r["repo"], r["role"]) == ("image", "root"))
    assert row["threshold"] == 2 and len({k["keyid"] for k in row["keys"]}) == 3 and row["online"]
    assert row["metadata"]["version"] == 1 and row["metadata"]["expired"] is False
    assert doc["problems"] == []

    assert _where(_status(off), "director", "root") == [f"offline dir {tmp_path / 'usb'} (present)"]
    assert _where(_status(off), "image", "snapshot") == ["data dir (online, 0600)"]
    (tmp_path / "usb").rename(tmp_path / "elsewhere")
    assert _where(_status(off), "image", "root") == [f"offline dir {tmp_path / 'usb'} (absent)"]
    assert _where(_status(enc), "image", "root") == ["encrypted in data dir"]

    code, out = fleet("keys", "status", "--data-dir", off)  # the rich table
    assert code == 0 and "offline dir" in out and "(absent)" in out and "timestamp" in out, out
    code, out = fleet("keys", "status", "--data-dir", tmp_path / "none")
    assert code == 1 and "fleet keys init" in out, out


def test_api_reports_key_status_to_admins_only(stack) -> None:  # type: ignore[no-untyped-def]
    doc = stack.client.request("GET", "/trust/keys")
    assert doc["initialised"] and {(r["repo"], r["role"]) for r in doc["roles"]} >= {("director", "timestamp")}
    assert all(k["kind"] == "online" for r in doc["roles"] for k in r["keys"])  # the 1-of-1 demo setup
    assert "PRIVATE" not in json.dumps(doc)
    viewer = stack.client.create_token("v", "viewer")["token"]
    import httpx

    res = httpx.get(stack.url + "/api/v1/trust/keys", headers={"Authorization": f"Bearer {viewer}"})
    assert res.status_code == 403


def test_cloud_init_then_keys_init(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    code, out = fleet("cloud", "init", "--data-dir", home, "--no-tls")
    assert code == 0, out
    assert not (home / "keys" / "keyring.json").exists()  # cloud init makes no signing keys now
    code, out = fleet("keys", "init", "--data-dir", home, "--offline-dir", tmp_path / "usb")
    assert code == 0, out
    c = Controller(load_settings(home, env={}))
    try:
        assert not c.trust.keyring.online("image", "root") and c.trust.keyring.online("image", "snapshot")
    finally:
        c.engine.dispose()
    code, out = fleet("audit", "ls", "--json", "--data-dir", home)
    rows = json.loads(out)
    init = next(r for r in rows if r["action"] == "keys.init")
    assert init["summary"]["root"] == f"offline dir {tmp_path / 'usb'}"


def test_keys_init_then_cloud_init_and_a_second_keys_init_says_what_exists(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    assert fleet("keys", "init", "--data-dir", home, "--offline-dir", tmp_path / "usb")[0] == 0
    keyring = (home / "keys" / "keyring.json").read_bytes()
    code, out = fleet("cloud", "init", "--data-dir", home, "--no-tls")
    assert code == 0, out
    assert (home / "keys" / "keyring.json").read_bytes() == keyring
    code, out = fleet("keys", "init", "--data-dir", home)
    assert code == 1, out
    assert "keys exist already" in out and f"offline dir {tmp_path / 'usb'}" in out and "fleet keys rotate" in out
    assert (home / "keys" / "keyring.json").read_bytes() == keyring


def test_offline_dir_inside_the_data_dir_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    code, out = fleet("keys", "init", "--data-dir", home, "--offline-dir", home / "sub" / "usb")
    assert code == 1 and "inside the data dir" in out, out
    assert not (home / "keys" / "keyring.json").exists()


def test_key_files_are_0600_and_dirs_0700(tmp_path: Path) -> None:
    home, usb = tmp_path / "ctl", tmp_path / "usb"
    assert fleet("keys", "init", "--data-dir", home, "--offline-dir", usb)[0] == 0
    for d in (home / "keys", usb):
        assert _mode(d) == 0o700
        pems = list(d.glob("*.pem"))
        assert pems and all(_mode(p) == 0o600 for p in pems), [(p.name, oct(_mode(p))) for p in pems]


def test_a_world_readable_key_is_reported_and_tightened_on_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "ctl"
    assert fleet("keys", "init", "--data-dir", home)[0] == 0
    leaked = next((home / "keys").glob("image-snapshot-*.pem"))
    leaked.chmod(0o644)
    (home / "keys").chmod(0o755)
    code, out = fleet("keys", "status", "--data-dir", home)
    assert code == 2, out
    assert f"permission problem: {leaked}: mode 0644 (group and others can read it)" in out, out
    assert "directory mode 0755" in out
    with caplog.at_level(logging.WARNING, logger="edgefleet.cloud.trust.repository"):
        c = Controller(load_settings(home, env={}))
        try:
            c.trust  # noqa: B018 - loaded as at start
        finally:
            c.engine.dispose()
    warned = [r.getMessage() for r in caplog.records if "signing keys were exposed" in r.getMessage()]
    assert any(str(leaked) in m for m in warned) and any("0755" in m for m in warned), warned
    assert _mode(leaked) == 0o600 and _mode(home / "keys") == 0o700
    assert _status(home)["problems"] == []
