"""The built-in type tables (db/decoding/oids.py) are the server's own pg_type, entry by entry.

Every result names each column's type from these tables without asking the catalog
(docs/api.md: "each result also says each column's PostgreSQL type name"), so each entry
is checked against the server the suite runs on, and the server's built-in types against
the tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2.extensions import connection

from datamorph_gateway.db.decoding.catalog import BUILTIN_TYPES
from datamorph_gateway.db.decoding.oids import ARRAY_ELEMENTS, BOX, SCALAR_NAMES


@pytest.fixture(scope="module")
def pg_type(server_url: str) -> Iterator[dict[int, tuple[str, int, str, str]]]:
    """oid → (typname, typelem, typtype, typcategory) of every built-in type.

    Built-in types are the same in every database of a server, so the server's own
    database does (no session database and roles to make: mutation testing runs this
    file once per mutant of the tables).
    """
    conn: connection = psycopg2.connect(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT oid::int, typname::text, typelem::int, typtype::text, typcategory::text"
                " FROM pg_type WHERE oid < 10000"
            )
            yield {oid: (name, elem, kind, cat) for oid, name, elem, kind, cat in cur.fetchall()}
    finally:
        conn.close()


def test_each_scalar_entry_is_the_servers(pg_type: dict[int, tuple[str, int, str, str]]) -> None:
    wrong = {
        oid: (name, pg_type[oid][0])
        for oid, name in SCALAR_NAMES.items()
        if oid in pg_type and pg_type[oid][0] != name
    }
    assert wrong == {}
    # Every entry is one of the server's (the suite's PostgreSQL is at least as new as 14).
    assert set(SCALAR_NAMES) - set(pg_type) == set()


def test_each_array_entry_is_the_servers(pg_type: dict[int, tuple[str, int, str, str]]) -> None:
    wrong = {
        oid: (elem, pg_type[oid][1], pg_type[oid][0])
        for oid, elem in ARRAY_ELEMENTS.items()
        if oid in pg_type
        and (pg_type[oid][1] != elem or pg_type[oid][0] != "_" + SCALAR_NAMES[elem])
    }
    assert wrong == {}
    assert set(ARRAY_ELEMENTS) - set(pg_type) == set()


def test_every_builtin_type_of_the_server_is_in_the_tables(
    pg_type: dict[int, tuple[str, int, str, str]],
) -> None:
    # Arrays are "_" + their element's name (_record is a pseudo-type; int2vector and
    # oidvector sit in the array category but are scalars here).
    arrays = {o for o, (name, elem, _, _) in pg_type.items() if name[0] == "_" and elem}
    scalars = {oid for oid, (_, _, kind, _) in pg_type.items() if kind != "c"} - arrays
    assert arrays - set(ARRAY_ELEMENTS) == set()
    assert scalars - set(SCALAR_NAMES) == set()


def test_builtin_types_carry_the_tables_names() -> None:
    assert BOX == 603
    for oid, name in SCALAR_NAMES.items():
        assert BUILTIN_TYPES[oid].name == name
    for oid, elem in ARRAY_ELEMENTS.items():
        assert BUILTIN_TYPES[oid].name == "_" + SCALAR_NAMES[elem]
    assert BUILTIN_TYPES[1020].decode is not None  # box[]: ";" between elements
