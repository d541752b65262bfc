"""Which database errors are an outage (retry, never acknowledge-and-drop) and which are the data's fault."""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc

from edgefleet.cloud.db import is_conflict, is_unavailable


def _wrap(cls, orig):  # type: ignore[no-untyped-def]
    return cls("SELECT 1", {}, orig)


class _PgError(Exception):
    def __init__(self, sqlstate: str):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_connection_loss_and_locks_are_outages_and_bad_data_is_not() -> None:
    assert is_unavailable(_wrap(exc.OperationalError, _PgError("08006")))  # PostgreSQL connection failure
    assert is_unavailable(_wrap(exc.OperationalError, sqlite3.OperationalError("database is locked")))
    assert is_unavailable(exc.TimeoutError("QueuePool limit reached"))
    assert not is_unavailable(_wrap(exc.OperationalError, sqlite3.OperationalError("no such table: device")))
    assert not is_unavailable(_wrap(exc.IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed")))
    assert not is_unavailable(_wrap(exc.DataError, _PgError("22P02")))  # e.g. a value PostgreSQL refuses
    assert not is_unavailable(ValueError("bad"))
    wrapped = RuntimeError("handler failed")
    wrapped.__cause__ = _wrap(exc.OperationalError, _PgError("57P01"))  # admin shutdown, under another error
    assert is_unavailable(wrapped)


def test_a_deadlock_is_a_conflict_to_retry_at_once() -> None:
    assert is_conflict(_wrap(exc.OperationalError, _PgError("40P01")))
    assert not is_conflict(_wrap(exc.OperationalError, _PgError("08006")))
