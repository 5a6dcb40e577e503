# Alembic environment for the registry: runs on the connection SqlRegistry hands over (or sqlalchemy.url).
from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from alembic.util import CommandError

from provnet.registry.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        if not url:
            raise CommandError("no database URL: give -x url=... or set sqlalchemy.url in alembic.ini")
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            _migrate(conn)
            conn.commit()
        return
    _migrate(connection)


def _migrate(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


run()
