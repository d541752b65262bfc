"""Database engine, sessions and migrations (Alembic, run programmatically on start).

SQLite runs in WAL mode with a busy timeout so the API, the MQTT bridge and the
reconciler can write from their own threads; PostgreSQL comes from ``DATABASE_URL``.

The data directory holds secrets (the database with token hashes, keys, broker
credentials, CLI config): ``secure_data_dir`` makes it 0700 and its known secret files
0600, and a SQLite database file is created 0600 before SQLite opens it (SQLite gives its
``-wal`` and ``-shm`` files the database file's mode).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from ..protocols import fast_json

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT_S = 5
SECRET_FILES = ("controller.toml", "cli.toml")
DIR_MODE, FILE_MODE = 0o700, 0o600


def _restrict(path: Path, mode: int) -> None:
    try:
        if path.exists() and (path.stat().st_mode & 0o777) & ~mode:
            os.chmod(path, mode)
    except OSError as exc:  # not ours (e.g. a directory an operator made): say so, keep going
        log.warning("cannot restrict %s to mode %o: %s", path, mode, exc)


def secure_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` 0700 (or tighten it) and tighten its known secret files to 0600."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _restrict(data_dir, DIR_MODE)
    for name in SECRET_FILES:
        _restrict(data_dir / name, FILE_MODE)


def secure_sqlite_file(path: Path) -> None:
    """Create the SQLite database file 0600 if absent; tighten it and its -wal/-shm files."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        _restrict(p, FILE_MODE)


def _sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        db_file = _sqlite_path(url)
        if db_file is not None and db_file.parent.is_dir():
            secure_sqlite_file(db_file)
    else:
        kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql+psycopg"):  # a server that does not answer fails fast, never hangs a thread
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    # JSON columns by orjson (fast_json: json's values; a telemetry column 14 → 2 µs)
    engine = create_engine(url, json_serializer=fast_json.dumps_column, json_deserializer=fast_json.loads, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revisions (every feature branch head)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_engine"] = engine
    command.upgrade(cfg, "heads")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# ----- outages (docs: nothing acknowledged before it is stored) -----

_UNAVAILABLE_SQLITE = ("unable to open database", "disk i/o error", "database is locked")


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the database cannot be reached now — retry
    later — rather than that this statement or its data is wrong.

    Connection refused/lost, a server shutting down, a pool exhausted and SQLite's "locked"
    or I/O errors are unavailability; integrity and data errors (a NaN PostgreSQL refuses,
    a duplicate key) are not: retrying them would never succeed.
    """
    seen: set[int] = set()
    cur: BaseException | None = error
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (exc.DisconnectionError, exc.TimeoutError, exc.InterfaceError)):
            return True
        if isinstance(cur, exc.DBAPIError):
            if cur.connection_invalidated:
                return True
            if isinstance(cur, exc.OperationalError):
                if "sqlite" in type(cur.orig).__module__:
                    return any(m in str(cur.orig).lower() for m in _UNAVAILABLE_SQLITE)
                return True  # PostgreSQL: operational = server/connection side (refused, shutdown, admin)
        cur = cur.__cause__ or cur.__context__
    return False


def is_conflict(error: BaseException) -> bool:
    """A transaction that lost a race (PostgreSQL SQLSTATE class 40: deadlock, serialization
    failure): retry it at once; the database itself is fine."""
    seen: set[int] = set()
    cur: BaseException | None = error
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        state = getattr(getattr(cur, "orig", None), "sqlstate", None) or getattr(cur, "sqlstate", None)
        if isinstance(state, str) and state.startswith("40"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def ping(engine: Engine) -> float:
    """Run ``SELECT 1``; returns the round trip in seconds.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database did not answer.
    """
    import time

    started = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return time.perf_counter() - started
