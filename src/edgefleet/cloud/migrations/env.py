"""Alembic environment: runs on the engine the controller passes in (or DATABASE_URL)."""

from __future__ import annotations

import os

from alembic import context
from sqlmodel import SQLModel

from edgefleet.cloud import audit, tables  # noqa: F401  (registers the tables)
from edgefleet.cloud.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("connection_engine")
    if engine is None:
        engine = make_engine(os.environ.get("DATABASE_URL", "sqlite:///edgefleet.db"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
