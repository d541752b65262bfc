"""``fleet audit ls|verify|export`` — against the API, and offline on the database
(``--data-dir``); every kind of tampering makes ``verify`` exit 1 naming the entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from edgefleet.cloud import audit
from edgefleet.cloud.cli import app

from .conftest import fill, sql


@pytest.fixture(autouse=True)
def _local_database(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "EDGEFLEET_DATABASE_URL", "EDGEFLEET_HOME", "EDGEFLEET_URL", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def fleet(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + (getattr(result, "stderr", "") or "")


def _edit(engine: Engine) -> None:
    sql(engine, "UPDATE audit_entry SET target = 'elsewhere' WHERE seq = 12")


def _delete(engine: Engine) -> None:
    sql(engine, "DELETE FROM audit_entry WHERE seq = 12")


def _swap(engine: Engine) -> None:
    sql(engine, "UPDATE audit_entry SET seq = -1 WHERE seq = 12")
    sql(engine, "UPDATE audit_entry SET seq = 12 WHERE seq = 13")
    sql(engine, "UPDATE audit_entry SET seq = 13 WHERE seq = -1")


def _truncate(engine: Engine) -> None:
    sql(engine, "DELETE FROM audit_entry WHERE seq >= 12")


def _forge(engine: Engine) -> None:
    with Session(engine) as s:
        a = s.get(audit.AuditAnchor, 11)
        assert a is not None
        sig = Ed25519PrivateKey.generate().sign(audit.anchor_message(a.seq, a.hash, a.prev_seq, audit.ts_text(a.ts)))
    sql(engine, "UPDATE audit_anchor SET signature = :s WHERE seq = 11", s=sig.hex())


TAMPERING: list[tuple[str, Callable[[Engine], None], int, str]] = [
    ("edit a field", _edit, 12, "edited"),
    ("delete a row", _delete, 12, "deleted"),
    ("swap two rows", _swap, 12, "reordered"),
    ("truncate the tail", _truncate, 12, "truncated"),
    ("forge an anchor signature", _forge, 11, "anchor"),
]


@pytest.mark.parametrize(("how", "tamper", "seq", "kind"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_fleet_audit_verify_offline_names_the_entry_and_the_kind(log, audit_db, how, tamper, seq, kind) -> None:  # type: ignore[no-untyped-def]
    _, home = audit_db
    fill(log, 20)
    code, out = fleet("audit", "verify", "--data-dir", str(home))
    assert code == 0 and "audit log ok: 20 entries, 2 signed anchors" in out, out
    tamper(log.engine)
    code, out = fleet("audit", "verify", "--data-dir", str(home))
    assert code == 1, out
    assert f"audit log broken at entry {seq}: {kind}" in out, out


def test_fleet_audit_against_the_api_lists_verifies_and_exports(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for name in ("alpha", "beta", "gamma"):
        stack.client.create_token(name, "viewer")
    auth = ["--url", stack.url, "--token", stack.token]
    code, out = fleet("audit", "ls", "--json", "--action", "token.", *auth)
    assert code == 0, out
    rows = json.loads(out)
    assert [r["summary"]["body"]["name"] for r in rows] == ["gamma", "beta", "alpha"]  # newest first
    code, out = fleet("audit", "ls", "--actor", "admin", *auth)
    assert code == 0 and "token.create" in out
    code, out = fleet("audit", "verify", *auth)
    assert code == 0 and "audit log ok: 3 entries" in out, out
    target = tmp_path / "audit.jsonl"
    code, out = fleet("audit", "export", str(target), *auth)
    assert code == 0 and "3 entries written" in out
    lines = [json.loads(x) for x in target.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3] and lines[1]["prev_hash"] == lines[0]["hash"]
    assert not list(tmp_path.glob("*.part"))

    sql(stack.controller.engine, "DELETE FROM audit_entry WHERE seq = 2")
    code, out = fleet("audit", "verify", *auth)
    assert code == 1 and "audit log broken at entry 2: deleted" in out, out
    code, out = fleet("audit", "verify", "--data-dir", str(stack.data_dir))  # offline, same verdict
    assert code == 1 and "audit log broken at entry 2: deleted" in out, out


def test_a_viewer_token_gets_a_clear_refusal(stack) -> None:  # type: ignore[no-untyped-def]
    viewer = stack.client.create_token("v", "viewer")["token"]
    code, out = fleet("audit", "verify", "--url", stack.url, "--token", viewer)
    assert code == 1 and "admin role" in out and "403" in out


def test_local_commands_are_recorded_with_the_os_user(tmp_path: Path) -> None:
    home = tmp_path / "ctl"
    code, out = fleet("keys", "init", "--data-dir", str(home))
    assert code == 0, out
    code, out = fleet("cloud", "init", "--data-dir", str(home))
    assert code == 0, out
    code, out = fleet("audit", "ls", "--json", "--data-dir", str(home))
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["actor"], r["role"], r["action"]) for r in reversed(rows)] == [
        (audit.local_actor(), "local", "keys.init"), (audit.local_actor(), "local", "token.create")]
    code, out = fleet("audit", "verify", "--data-dir", str(home))
    assert code == 0, out
