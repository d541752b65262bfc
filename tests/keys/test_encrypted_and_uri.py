"""Root encrypted at rest with a passphrase, or on a signer URI: unreadable without the
passphrase, a wrong passphrase refused with a clear error, the right one rotates; a
``file2:`` signer URI outside the data dir works the same way with ``--root-signer``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ..conftest import start_stack
from .conftest import fleet


def test_encrypted_root_needs_the_passphrase_and_refuses_a_wrong_one(tmp_path: Path, broker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "controller"
    (tmp_path / "pass").write_text("correct horse battery staple\n")
    code, out = fleet("keys", "init", "--data-dir", home, "--passphrase-file", tmp_path / "pass")
    assert code == 0 and "encrypted in data dir" in out, out
    root_files = sorted((home / "keys").glob("*-root-*.pem"))
    assert len(root_files) == 2
    for f in root_files:
        data = f.read_bytes()
        assert b"ENCRYPTED PRIVATE KEY" in data
        with pytest.raises(TypeError):
            load_pem_private_key(data, None)  # unreadable without the passphrase
    online = [p for p in (home / "keys").glob("*.pem") if "-root-" not in p.name]
    assert online and all(b"ENCRYPTED" not in p.read_bytes() for p in online)  # the controller signs with these

    stack = start_stack(home, broker)
    try:
        auth = ("--url", stack.url, "--token", stack.token, "--data-dir", home)
        code, out = fleet("keys", "rotate", "timestamp", *auth)
        assert code == 1 and "encrypted in data dir" in out and "passphrase" in out, out
        monkeypatch.setenv("ROOT_PASS", "wrong")
        code, out = fleet("keys", "rotate", "timestamp", "--passphrase-env", "ROOT_PASS", *auth)
        assert code == 1 and "wrong passphrase for image/root key" in out, out
        code, out = fleet("keys", "rotate", "timestamp", "--passphrase-env", "UNSET_VAR_X", *auth)
        assert code == 1 and "UNSET_VAR_X" in out and "not set" in out, out
        versions = json.loads(stack.controller.trust.roots().image)["signed"]["version"]
        assert versions == 1  # nothing changed by the refusals

        monkeypatch.setenv("ROOT_PASS", "correct horse battery staple")
        code, out = fleet("keys", "rotate", "root", "--passphrase-env", "ROOT_PASS", *auth)
        assert code == 0, out
        assert json.loads(stack.controller.trust.roots().image)["signed"]["version"] == 2
        new_roots = sorted((home / "keys").glob("*-root-*.pem"))
        assert len(new_roots) == 4 and all(b"ENCRYPTED PRIVATE KEY" in p.read_bytes() for p in new_roots)
        status = stack.client.request("GET", "/trust/keys")
        root_rows = [r for r in status["roles"] if r["role"] == "root"]
        assert {k["where"] for r in root_rows for k in r["keys"]} == {"encrypted in data dir"}
        assert not any(r["online"] for r in root_rows)
    finally:
        stack.stop()


def test_root_on_a_file2_signer_uri(tmp_path: Path, broker) -> None:  # type: ignore[no-untyped-def]
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    token_dir = tmp_path / "token"
    token_dir.mkdir(mode=0o700)
    (token_dir / "root.pem").write_bytes(pem)
    uri = f"file2:{token_dir / 'root.pem'}"
    home = tmp_path / "controller"
    code, out = fleet("keys", "init", "--data-dir", home, "--root-signer", uri)
    assert code == 0 and "signer URI file2:" in out, out
    code, out = fleet("keys", "status", "--data-dir", home)
    assert code == 0 and out.count("signer URI file2:…") == 2, out
    stack = start_stack(home, broker)
    try:
        auth = ("--url", stack.url, "--token", stack.token, "--data-dir", home)
        code, out = fleet("keys", "rotate", "snapshot", *auth)
        assert code == 1 and "signer URI file2:" in out and "--root-signer" in out, out
        code, out = fleet("keys", "rotate", "snapshot", "--root-signer", uri, *auth)
        assert code == 0, out
        for repo in ("image", "director"):
            assert json.loads(getattr(stack.controller.trust.roots(), repo))["signed"]["version"] == 2
        rows = stack.client.request("GET", "/audit", params={"action": "keys."})
        assert str(token_dir) not in json.dumps([r for r in rows if r["action"] == "keys.init"])
    finally:
        stack.stop()
