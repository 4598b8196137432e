"""The catalog of non-built-in types (``TypeCatalog``): what it answers, when it asks the
server, and the bound that keeps temporary tables' row types from growing it forever.

Real types in the session database; the connection is a real one, wrapped only to count
the catalog queries ``describe`` sends.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions as ext
import pytest

from datamorph_gateway.db.decoding.catalog import ColumnType, TypeCatalog


class CountingConnection:
    """A real connection that counts the cursors opened on it: one per catalog query."""

    def __init__(self, conn: ext.connection) -> None:
        self.conn = conn
        self.queries = 0

    def cursor(self, *args: Any, **kwargs: Any) -> ext.cursor:
        self.queries += 1
        cursor: ext.cursor = self.conn.cursor(*args, **kwargs)
        return cursor


@pytest.fixture(scope="module")
def types(database_url: str) -> Iterator[dict[str, int]]:
    """Three enum types of this module's own (name → OID), dropped afterwards."""
    schema = f"catalog_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
        for name in ("a", "b", "c"):
            cur.execute(f"CREATE TYPE \"{schema}\".mood_{name} AS ENUM ('x')")
        cur.execute(
            "SELECT typname, oid::int8 FROM pg_type WHERE typnamespace = %s::regnamespace "
            "AND typtype = 'e'",
            (schema,),
        )
        found = {name.removeprefix("mood_"): int(oid) for name, oid in cur.fetchall()}
    try:
        yield found
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[CountingConnection]:
    real = psycopg2.connect(database_url)
    try:
        yield CountingConnection(real)
    finally:
        real.close()


def test_the_default_bound_is_ten_thousand_types() -> None:
    # The class docstring names this bound: large enough for any schema's own types.
    assert inspect.signature(TypeCatalog).parameters["max_entries"].default == 10_000


def test_a_type_is_asked_for_once_then_answered_from_memory(
    conn: CountingConnection, types: dict[str, int]
) -> None:
    catalog = TypeCatalog()
    first = catalog.describe(conn, [types["a"], 25])  # type: ignore[arg-type]
    again = catalog.describe(conn, [types["a"]])  # type: ignore[arg-type]
    assert first == [ColumnType(types["a"], "mood_a"), ColumnType(25, "text", first[1].decode)]
    assert again == [ColumnType(types["a"], "mood_a")]
    assert conn.queries == 1


def test_clear_forgets_and_the_next_describe_asks_again(
    conn: CountingConnection, types: dict[str, int]
) -> None:
    catalog = TypeCatalog()
    catalog.describe(conn, [types["a"]])  # type: ignore[arg-type]
    catalog.clear()
    assert catalog.describe(conn, [types["a"]]) == [  # type: ignore[arg-type]
        ColumnType(types["a"], "mood_a")
    ]
    assert conn.queries == 2


def test_an_oid_the_server_lacks_is_described_by_number_and_the_rest_still_load(
    conn: CountingConnection, types: dict[str, int]
) -> None:
    catalog = TypeCatalog()
    missing = 4_000_000_000  # no type has it
    described = catalog.describe(conn, [missing, types["b"]])  # type: ignore[arg-type]
    assert described == [ColumnType(missing, str(missing)), ColumnType(types["b"], "mood_b")]
    # The type that exists is kept; the missing one is not, so it is asked for again.
    catalog.describe(conn, [types["b"]])  # type: ignore[arg-type]
    assert conn.queries == 1
    catalog.describe(conn, [missing])  # type: ignore[arg-type]
    assert conn.queries == 2


def test_past_the_bound_the_cache_starts_again(
    conn: CountingConnection, types: dict[str, int]
) -> None:
    catalog = TypeCatalog(max_entries=2)
    for name in ("a", "b"):  # two entries: at the bound, not past it
        catalog.describe(conn, [types[name]])  # type: ignore[arg-type]
    catalog.describe(conn, [types["a"], types["b"]])  # type: ignore[arg-type]
    assert conn.queries == 2  # both kept
    catalog.describe(conn, [types["c"]])  # type: ignore[arg-type]  # a third: emptied first
    assert conn.queries == 3
    catalog.describe(conn, [types["c"]])  # type: ignore[arg-type]
    assert conn.queries == 3  # the newcomer is kept
    catalog.describe(conn, [types["a"]])  # type: ignore[arg-type]
    assert conn.queries == 4  # the older ones are gone
