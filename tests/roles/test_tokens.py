"""Tokens through the API and the ``fleet token`` CLI: create shows the secret once, ls never
shows it, revoke stops it at once, the last admin token stays."""

from __future__ import annotations

import re

import httpx
from typer.testing import CliRunner

from edgefleet.cloud.api.routes.tokens import list_tokens, revoke_token
from edgefleet.cloud.cli import app as fleet_cli
from edgefleet.cloud.errors import Conflict


def test_created_token_works_with_its_role_and_its_secret_is_never_listed(server) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {server.tokens['admin']}"}
    r = httpx.post(server.url + "/api/v1/tokens", headers=admin, json={"name": "grafana", "role": "viewer"})
    assert r.status_code == 201
    body = r.json()
    assert body["role"] == "viewer" and body["token"].startswith("efk_")
    listed = httpx.get(server.url + "/api/v1/tokens", headers=admin)
    assert body["token"] not in listed.text and "token_hash" not in listed.text
    assert any(t["id"] == body["id"] and t["revoked_at"] is None for t in listed.json())
    h = {"Authorization": f"Bearer {body['token']}"}
    assert httpx.get(server.url + "/api/v1/devices", headers=h).status_code == 200
    assert httpx.get(server.url + "/api/v1/tokens", headers=h).status_code == 403


def test_unknown_role_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {server.tokens['admin']}"}
    r = httpx.post(server.url + "/api/v1/tokens", headers=admin, json={"name": "x", "role": "root"})
    assert r.status_code == 422 and "role must be one of" in r.json()["message"]  # checked at the schema


def test_revoking_an_unknown_token_is_404(server) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {server.tokens['admin']}"}
    assert httpx.delete(server.url + "/api/v1/tokens/999999", headers=admin).status_code == 404


def test_the_last_active_admin_token_cannot_be_revoked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edgefleet.cloud.api.routes.tokens import create_token
    from edgefleet.cloud.runtime import Controller
    from edgefleet.cloud.settings import load_settings

    c = Controller(load_settings(tmp_path, env={}))
    c.migrate()
    with c.session() as s:
        only, _ = create_token(s, "root", "admin")
        viewer, _ = create_token(s, "v", "viewer")
        revoke_token(s, viewer.id or 0)
        try:
            revoke_token(s, only.id or 0)
            raise AssertionError("revoked the last admin token")
        except Conflict:
            pass
        second, _ = create_token(s, "root2", "admin")
        revoke_token(s, only.id or 0)
        assert [t.name for t in list_tokens(s, include_revoked=False)] == ["root2"]
    c.engine.dispose()


def test_cli_creates_lists_and_revokes(server) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    common = ["--url", server.url, "--token", server.tokens["admin"]]
    res = runner.invoke(fleet_cli, ["token", "create", "--role", "operator", "--name", "ci-bot", *common])
    assert res.exit_code == 0, res.output
    secret = re.search(r"efk_\S+", res.output).group(0)  # type: ignore[union-attr]
    token_id = int(re.search(r"token (\d+) \(ci-bot, role operator\)", res.output).group(1))  # type: ignore[union-attr]
    res = runner.invoke(fleet_cli, ["token", "ls", "--json", *common])
    assert res.exit_code == 0 and "ci-bot" in res.output and secret not in res.output
    res = runner.invoke(fleet_cli, ["token", "revoke", str(token_id), *common])
    assert res.exit_code == 0 and "revoked" in res.output
    assert httpx.get(server.url + "/api/v1/devices", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_cli_refuses_a_bad_role_and_reports_403_for_non_admins(server) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    res = runner.invoke(fleet_cli, ["token", "create", "--role", "god", "--name", "x", "--url", server.url,
                                    "--token", server.tokens["admin"]])
    assert res.exit_code != 0
    res = runner.invoke(fleet_cli, ["token", "ls", "--url", server.url, "--token", server.tokens["operator"]])
    assert res.exit_code != 0 and "403" in res.output
