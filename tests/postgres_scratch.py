"""A fresh PostgreSQL database per test on the local server; the test is skipped where none answers."""

import os
import uuid

import pytest
import sqlalchemy as sa

POSTGRES_ADMIN_URL = os.environ.get("COMPOUNDRY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class scratch_postgres_database:
    """CREATE DATABASE on enter, DROP on exit; skips the test if no server answers."""

    def __enter__(self) -> str:
        self.name = f"compoundry_test_{uuid.uuid4().hex[:10]}"
        self.admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with self.admin.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {self.name}"))
        except sa.exc.OperationalError as exc:
            pytest.skip(f"no PostgreSQL server at {POSTGRES_ADMIN_URL}: {exc.orig}")
        return sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc_info) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))
        self.admin.dispose()
