"""Stamps (db/stamps.py): a warm GetSchemas is one statement, and DDL re-describes only
what it changed; names are refused exactly as a describe refuses them."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from datamorph_gateway.db import catalog
from datamorph_gateway.db.database import Database
from datamorph_gateway.db.names import parse_table_name
from datamorph_gateway.db.prepared import PreparingConnection
from datamorph_gateway.db.stamps import RequestStamp, Stamp
from datamorph_gateway.errors import NotFound, PermissionDenied

from ..fixtures.databases import ddl_counter_off, throwaway_schema


@pytest.fixture
def schema(seeded_database: str) -> Iterator[str]:
    with throwaway_schema(
        seeded_database,
        "stamps",
        (
            "CREATE TABLE {name}.a (id serial PRIMARY KEY, v text DEFAULT 'x');"
            "CREATE TABLE {name}.b (id int REFERENCES {name}.a, w numeric(8, 2));"
            "CREATE VIEW {name}.c AS SELECT * FROM {name}.b"
        ),
    ) as name:
        yield name


def _ddl(dsn: str, statement: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def test_warm_calls_describe_nothing_and_ddl_redescribes_only_its_table(
    database: Database, seeded_database: str, schema: str
) -> None:
    names = [f"{schema}.a", f"{schema}.b", f"{schema}.c"]
    parsed = [parse_table_name(n) for n in names]
    kept: dict[Stamp, str] = {}

    def cached(stamp: Stamp) -> str | None:
        return kept.get(stamp)

    def call() -> list[catalog.TableDescription | str]:
        found = database.get_schemas(parsed, names, 10, cached=cached).tables
        for item in found:
            if isinstance(item, catalog.TableDescription):
                assert item.stamp is not None
                kept[item.stamp] = f"cached {item.relation.name} {len(item.columns)}"
        return found

    first = call()
    assert all(isinstance(d, catalog.TableDescription) for d in first)
    # The describe's own stamps are those the stamp statement gives: the next call hits.
    assert call() == ["cached a 2", "cached b 2", "cached c 2"]
    _ddl(seeded_database, f"ALTER TABLE {schema}.a ADD COLUMN z int")
    changed = call()
    assert changed[1:] == ["cached b 2", "cached c 2"]
    assert isinstance(changed[0], catalog.TableDescription)
    assert [c["column_name"] for c in changed[0].columns] == ["id", "v", "z"]
    # A column the foreign key of b references is renamed: a and b change, the view on b not.
    _ddl(seeded_database, f"ALTER TABLE {schema}.a RENAME COLUMN id TO ident")
    again = call()
    assert again[2] == "cached c 2"
    assert isinstance(again[0], catalog.TableDescription)
    assert isinstance(again[1], catalog.TableDescription)
    assert again[1].foreign_keys[0]["foreign_column_name"] == "ident"


@pytest.mark.parametrize("factory", [PreparingConnection, psycopg2.extensions.connection])
def test_stamps_refuse_names_as_describe_does(
    seeded_database: str, schema: str, factory: type[psycopg2.extensions.connection]
) -> None:
    conn = psycopg2.connect(seeded_database, connection_factory=factory)
    conn.autocommit = True
    try:
        for names, error in (
            ([f"{schema}.a", "no_such_table"], NotFound),
            (["pg_catalog.pg_class"], PermissionDenied),
            ([f"{schema}.a_id_seq"], NotFound),  # a sequence is not a table
        ):
            parsed = [parse_table_name(n) for n in names]
            for call in (catalog.stamps, catalog.describe):
                with pytest.raises(error) as err:
                    call(conn, parsed, names)
                assert names[-1] in str(err.value)
        stamped = catalog.stamps(conn, [parse_table_name(f"{schema}.a")], [f"{schema}.a"])
        described = catalog.describe(
            conn, [parse_table_name(f"{schema}.a")], [f"{schema}.a"], stamped=True
        )
        assert [d.stamp for d in described] == stamped
    finally:
        conn.close()


def test_the_key_holds_the_session_that_renders_the_answer(
    seeded_database: str, schema: str
) -> None:
    """The same relation seen with another search_path (or role) is another entry; the same
    name on another search_path may be another relation, resolved as PostgreSQL does."""
    conn = psycopg2.connect(seeded_database)
    conn.autocommit = True
    try:
        _ddl(seeded_database, f"CREATE SCHEMA {schema}_x; CREATE TABLE {schema}_x.a (q int)")
        qualified = [parse_table_name(f"{schema}.a")]
        plain = [parse_table_name("a")]
        with conn.cursor() as cur:
            cur.execute(f"SET search_path = {schema}, public")
        [one] = catalog.stamps(conn, qualified, ["x"])
        [unqualified] = catalog.stamps(conn, plain, ["a"])
        assert unqualified == one
        with conn.cursor() as cur:
            cur.execute(f"SET search_path = {schema}_x, {schema}, public")
        [two] = catalog.stamps(conn, qualified, ["x"])
        assert two.key[1] == one.key[1]
        assert two.key != one.key
        [shadowed] = catalog.stamps(conn, plain, ["a"])
        assert shadowed.key[1] != one.key[1]
        # Settings a role may set for itself (ALTER ROLE ... SET) that change how a default is
        # written: "nextval('""a_id_seq""'...)" with quote_all_identifiers.
        keys = set()
        for setting in (
            "quote_all_identifiers = on",
            "standard_conforming_strings = off",
            "lc_monetary = 'POSIX'",  # the clusters' own is C
        ):
            with conn.cursor() as cur:
                cur.execute(f"RESET ALL; SET search_path = {schema}_x, {schema}, public")
                cur.execute(f"SET {setting}")
            [seen] = catalog.stamps(conn, qualified, ["x"])
            keys.add(seen.key)
        assert two.key not in keys
        assert len(keys) == 3
    finally:
        _ddl(seeded_database, f"DROP SCHEMA IF EXISTS {schema}_x CASCADE")
        conn.close()


@pytest.fixture(params=["counter", "digest"])
def checked_by(request: pytest.FixtureRequest, database_admin_url: str) -> Iterator[str]:
    """How a warm GetSchemas is checked: roles.sql's DDL counter, or (the counter's event
    trigger disabled) the catalog digest."""
    if request.param == "counter":
        yield "counter"
        return
    with ddl_counter_off(database_admin_url):
        yield "digest"


def test_a_warm_call_is_the_digest_alone_and_ddl_changes_the_digest(
    database: Database, seeded_database: str, schema: str, checked_by: str
) -> None:
    """With ``answered``, a call whose version was answered before checks nothing else; any
    change to what the answer reads, here to one table of three, gives another version,
    whether the DDL counter or the digest gives it."""
    names = [f"{schema}.a", f"{schema}.b", f"{schema}.c"]
    parsed = [parse_table_name(n) for n in names]
    answers: dict[RequestStamp, str] = {}
    looked_up: list[Stamp] = []

    def cached(stamp: Stamp) -> str | None:
        looked_up.append(stamp)
        return None

    def call() -> tuple[RequestStamp, str | None]:
        found = database.get_schemas(parsed, names, 10, cached=cached, answered=answers.get)
        assert found.request is not None
        return found.request, found.answer

    request, answer = call()
    assert request.version.startswith("ddl ") == (checked_by == "counter")
    assert answer is None
    assert len(looked_up) == 3  # stamped, then described
    answers[request] = "kept"
    looked_up.clear()
    assert call() == (request, "kept")
    assert looked_up == []  # no stamps statement, no describe
    for ddl in (
        f"ALTER TABLE {schema}.a ALTER COLUMN v SET NOT NULL",
        f"ALTER SEQUENCE {schema}.a_id_seq RENAME TO a_counter",  # a's default's text only
        f"ALTER TABLE {schema}.a RENAME COLUMN id TO ident",  # what b's foreign key names
    ):
        _ddl(seeded_database, ddl)
        changed, answer = call()
        assert answer is None
        assert changed.key == request.key
        assert changed.version != request.version
        request = changed
    # Another spelling of the same names is another answer: its keys are the names as written.
    [other] = [
        database.ddl_counter.check(conn, parsed, [n.upper() for n in names])
        for conn in _conns(database)
    ]
    assert other.key != request.key
    assert other.version == request.version


def test_a_name_that_means_nothing_digests_as_no_kept_answer(
    seeded_database: str, schema: str
) -> None:
    """check refuses nothing, but what it gives for a missing name is never a kept digest."""
    conn = psycopg2.connect(seeded_database)
    conn.autocommit = True
    try:
        found = [f"{schema}.a", f"{schema}.b"]
        missing = [f"{schema}.a", f"{schema}.nothing"]
        one = catalog.check(conn, [parse_table_name(n) for n in found], ["x", "y"])
        two = catalog.check(conn, [parse_table_name(n) for n in missing], ["x", "y"])
        assert one.key == two.key
        assert one.version != two.version
        with pytest.raises(NotFound):
            catalog.stamps(conn, [parse_table_name(n) for n in missing], missing)
    finally:
        conn.close()


def _conns(database: Database) -> Iterator[psycopg2.extensions.connection]:
    with database.pool.connection(10) as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            conn.autocommit = False
