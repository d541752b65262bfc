"""Audit tests: a migrated SQLite controller database in tmp, its audit log, and SQL that
tampers with the tables the way someone with database access could."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from edgefleet.cloud import audit
from edgefleet.cloud.db import make_engine, migrate


@pytest.fixture
def audit_db(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    home = tmp_path / "controller"
    home.mkdir()
    engine = make_engine(f"sqlite:///{home / 'controller.db'}")
    migrate(engine)
    yield engine, home
    engine.dispose()


@pytest.fixture
def log(audit_db: tuple[Engine, Path]) -> audit.AuditLog:
    """An audit log anchored every 10 entries."""
    engine, home = audit_db
    return audit.AuditLog.open(engine, home, audit.AnchorPolicy(every=10))


def fill(log: audit.AuditLog, n: int) -> None:
    actions = ["model.push", "rollout.start", "rollout.pause", "capture.set", "token.create"]
    for i in range(n):
        log.record(actor=f"user-{i % 3}", role="operator", action=actions[i % len(actions)],
                   target=f"target-{i + 1}", summary={"body": {"i": i + 1, "ratio": 0.1 * i, "tags": ["a", "b"]}})


def sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def verify(log: audit.AuditLog) -> audit.VerifyReport:
    return log.verify()
