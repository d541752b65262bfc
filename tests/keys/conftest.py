"""Helpers for the keys-at-rest tests: the ``fleet`` CLI in-process, without the caller's environment."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app, common


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "EDGEFLEET_DATABASE_URL", "EDGEFLEET_HOME", "EDGEFLEET_URL", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for console in (common.console, common.err_console):  # no wrapping inside paths and messages
        monkeypatch.setattr(console, "width", 400)


def fleet(*args: object, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    out = result.output + (getattr(result, "stderr", "") or "")
    return result.exit_code, " ".join(out.split())
