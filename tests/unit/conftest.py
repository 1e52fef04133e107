"""Shared unit-test fixtures."""

import pytest

from compoundry.store import PlatformStore
from tests.postgres_scratch import scratch_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """The platform database on a real SQLite file and on a scratch database of the local PostgreSQL
    (skipped where none answers): what docker-compose runs must behave like the embedded default."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'platform.db'}"
        s = PlatformStore(url)
        s.create_schema()
        yield s
        s.close()
        return
    with scratch_postgres_database() as url:
        s = PlatformStore(url)
        s.create_schema()
        yield s
        s.close()
