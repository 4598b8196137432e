"""roles.sql's DDL counter (db/stamps.py, ``EPOCH``): what a warm GetSchemas checks where
the database has it. It counts every DDL transaction, nothing else can move it, and a
gateway falls back to the catalog digest wherever it is missing, off or broken."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import errorcodes

from datamorph_gateway.db import catalog
from datamorph_gateway.db.database import Database, Schemas
from datamorph_gateway.db.names import parse_table_name
from datamorph_gateway.db.stamps import RequestStamp, Stamp
from datamorph_gateway.errors import PermissionDenied
from datamorph_gateway.schema_cache import SchemaCache

from ..fixtures.databases import ddl_counter_off, throwaway_schema
from ..fixtures.roles import apply_again, roles_for


def _conn(dsn: str) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def _count(dsn: str) -> int:
    with _conn(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(n) FROM datamorph_ddl.epoch")
        row = cur.fetchone()
    conn.close()
    assert row is not None
    return int(row[0])


def _roles_sql(seeded_database: str, admin_dsn: str) -> None:
    made = roles_for(seeded_database)
    assert made is not None
    apply_again(admin_dsn, made)


def _refused_and_not_installed(
    seeded_database: str, admin_dsn: str, admin: psycopg2.extensions.connection
) -> None:
    """roles.sql stops on a counter schema someone else made, and installs no trigger."""
    with pytest.raises(RuntimeError, match="schema datamorph_ddl exists and belongs to"):
        _roles_sql(seeded_database, admin_dsn)
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_event_trigger WHERE evtname = 'datamorph_ddl_epoch'")
        assert cur.fetchone() == (0,)


@pytest.fixture
def schema(seeded_database: str) -> Iterator[str]:
    with throwaway_schema(
        seeded_database, "counter", "CREATE TABLE {name}.a (id int PRIMARY KEY, v text)"
    ) as name:
        yield name


def _in_slot(dsn: str, slot: int) -> psycopg2.extensions.connection:
    """A connection of ``dsn`` whose backend's pid is ``slot`` modulo 64 (a few dozen tries:
    an attacker can do the same)."""
    for _ in range(1000):
        conn = _conn(dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid() % 64")
            row = cur.fetchone()
        if row == (slot,):
            return conn
        conn.close()
    raise AssertionError(f"no backend in slot {slot}")


@contextlib.contextmanager
def _every_row_held(admin_dsn: str) -> Iterator[None]:
    """Every row of the counter locked by a transaction left open, as 64 sessions of any
    login would hold them, each with a CREATE TEMP TABLE it has not committed. When the block
    ends, rows the trigger added meanwhile are folded into slot 0 (the sum stays)."""
    admin = psycopg2.connect(admin_dsn)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT slot FROM datamorph_ddl.epoch FOR UPDATE")
            yield
        admin.rollback()
        with admin.cursor() as cur:
            cur.execute(
                "UPDATE datamorph_ddl.epoch SET n = n + (SELECT coalesce(sum(n), 0)"
                " FROM datamorph_ddl.epoch WHERE slot >= 64) WHERE slot = 0;"
                "DELETE FROM datamorph_ddl.epoch WHERE slot >= 64"
            )
        admin.commit()
    finally:
        admin.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _check(database: Database, counter: catalog.DdlCounter, name: str) -> RequestStamp:
    with database.pool.connection(10) as conn:
        conn.autocommit = True
        try:
            return counter.check(conn, [parse_table_name(name)], [name])
        finally:
            conn.autocommit = False


def test_every_ddl_transaction_counts_and_a_rolled_back_one_does_not(
    seeded_database: str, schema: str
) -> None:
    """The serving role (no superuser) runs the DDL, as a caller's ExecuteQuery does."""
    before = _count(seeded_database)
    conn = _conn(seeded_database)
    try:
        with conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {schema}.a ADD COLUMN w int")
            assert _count(seeded_database) == before + 1
            cur.execute(f"BEGIN; ALTER TABLE {schema}.a ADD COLUMN x int; ROLLBACK")
            assert _count(seeded_database) == before + 1
            cur.execute(f"CREATE TEMP TABLE shadow (q int); COMMENT ON TABLE {schema}.a IS 'c'")
            assert _count(seeded_database) == before + 3
    finally:
        conn.close()


def test_ddl_does_not_wait_for_another_transaction_in_its_slot(
    seeded_database: str, schema: str
) -> None:
    """A caller's transaction left open after a DDL (or a long migration) holds its slot's
    row: DDL of another backend in the same slot must not wait for it (nor deadlock with it)."""
    before = _count(seeded_database)
    holder = _conn(seeded_database)
    other = None
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN; CREATE TEMP TABLE held (x int); SELECT pg_backend_pid() % 64")
            row = cur.fetchone()
        assert row is not None
        other = _in_slot(seeded_database, row[0])
        with other.cursor() as cur:
            cur.execute(f"SET lock_timeout = '3s'; ALTER TABLE {schema}.a ADD COLUMN w int")
        assert _count(seeded_database) == before + 1
        with holder.cursor() as cur:
            cur.execute("COMMIT")
        assert _count(seeded_database) == before + 2
    finally:
        holder.close()
        if other is not None:
            other.close()


def test_ddl_in_a_repeatable_read_transaction_never_fails_on_the_count(
    seeded_database: str, database_admin_url: str, schema: str
) -> None:
    """Another backend counts in this transaction's slot after its snapshot: locking or
    updating that row would fail the DDL with a serialization error, so it counts in a row of
    its own; running roles.sql again folds such rows back into the 64."""
    before = _count(seeded_database)
    for isolation in ("REPEATABLE READ", "SERIALIZABLE"):
        snapshot = _conn(seeded_database)
        other = None
        try:
            with snapshot.cursor() as cur:
                cur.execute(f"BEGIN ISOLATION LEVEL {isolation}; SELECT pg_backend_pid() % 64")
                row = cur.fetchone()
            assert row is not None
            other = _in_slot(seeded_database, row[0])
            with other.cursor() as cur:
                cur.execute(f"COMMENT ON TABLE {schema}.a IS 'counted first'")
            with snapshot.cursor() as cur:
                cur.execute(f"COMMENT ON TABLE {schema}.a IS 'then this'; COMMIT")
        finally:
            snapshot.close()
            if other is not None:
                other.close()
    assert _count(seeded_database) == before + 4
    with _conn(database_admin_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM datamorph_ddl.epoch")
        assert cur.fetchone() == (66,)
        _roles_sql(seeded_database, database_admin_url)
        cur.execute("SELECT count(*) FROM datamorph_ddl.epoch")
        assert cur.fetchone() == (64,)
    admin.close()
    assert _count(seeded_database) >= before + 4


def test_every_row_held_leaves_ddl_running_and_counted(
    seeded_database: str, database_admin_url: str, schema: str
) -> None:
    """Any login may hold every slot (64 sessions, each in an open transaction after a CREATE
    TEMP TABLE): DDL, a superuser's included, still runs at once, and is counted."""
    before = _count(seeded_database)
    with _every_row_held(database_admin_url):
        for dsn in (seeded_database, database_admin_url):
            conn = _conn(dsn)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SET lock_timeout = '3s';"
                        f"BEGIN; ALTER TABLE {schema}.a ADD COLUMN w int; ROLLBACK;"
                        f"COMMENT ON TABLE {schema}.a IS 'held'"
                    )
            finally:
                conn.close()
        assert _count(seeded_database) == before + 2
    assert _count(seeded_database) == before + 2


def test_the_check_is_the_counter_and_falls_back_to_the_digest(
    database: Database, database_admin_url: str, schema: str
) -> None:
    clock = _Clock()
    counter = catalog.DdlCounter(retry_s=60, clock=clock)
    name = f"{schema}.a"
    assert _check(database, counter, name).version.startswith("ddl ")
    with ddl_counter_off(database_admin_url):
        digest = _check(database, counter, name).version
        assert len(digest) == 32  # an MD5
        assert not digest.startswith("ddl ")
    # Enabled again, but asked again only after retry_s: the digest meanwhile.
    clock.now += 59
    assert _check(database, counter, name).version == digest
    clock.now += 2
    assert _check(database, counter, name).version.startswith("ddl ")


def test_ddl_run_while_the_trigger_was_off_is_not_hidden_by_the_count(
    database: Database, database_admin_url: str, seeded_database: str, schema: str
) -> None:
    """A gateway that never saw the trigger off: the count did not move for the DDL run
    meanwhile, but enabling the trigger again is a new row version of it, and that is part
    of the version."""
    counter = catalog.DdlCounter()
    name = f"{schema}.a"
    before = _check(database, counter, name)
    with ddl_counter_off(database_admin_url):
        count = _count(seeded_database)
        with _conn(seeded_database) as conn, conn.cursor() as cur:
            cur.execute(f"ALTER TABLE {name} ADD COLUMN unseen int")
        conn.close()
        assert _count(seeded_database) == count
    after = _check(database, counter, name)
    assert after.version.startswith("ddl ")
    assert after.version != before.version


def test_a_name_resolving_elsewhere_is_another_version(
    database: Database, seeded_database: str, schema: str
) -> None:
    """What each name resolves to is checked on every call, as the digest does: a table
    dropped and made again under the same name, or a name that now means nothing."""
    counter = catalog.DdlCounter()
    name = f"{schema}.a"
    first = _check(database, counter, name)
    missing = _check(database, counter, f"{schema}.nothing")
    assert missing.version.endswith("{NULL}")
    with _conn(seeded_database) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE {name}; CREATE TABLE {name} (id int)")
    conn.close()
    again = _check(database, counter, name)
    assert again.version.split()[-1] != first.version.split()[-1]


def test_callers_cannot_move_or_stop_the_counter(seeded_database: str) -> None:
    """As the serving role, which runs callers' SQL: the counter is readable, nothing else.
    A count set back would let an old answer pass as current."""
    conn = _conn(seeded_database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM datamorph_ddl.epoch")
            assert cur.fetchone() == (64,)
        for statement in (
            "UPDATE datamorph_ddl.epoch SET n = 0",
            "DELETE FROM datamorph_ddl.epoch",
            "TRUNCATE datamorph_ddl.epoch",
            "INSERT INTO datamorph_ddl.epoch VALUES (99, 0)",
            "DROP TABLE datamorph_ddl.epoch",
            "ALTER TABLE datamorph_ddl.epoch ADD COLUMN x int",
            "CREATE TABLE datamorph_ddl.planted (x int)",
            "CREATE OR REPLACE FUNCTION datamorph_ddl.count_ddl() RETURNS event_trigger"
            " LANGUAGE plpgsql AS $$ BEGIN END $$",
            "ALTER EVENT TRIGGER datamorph_ddl_epoch DISABLE",
            "DROP EVENT TRIGGER datamorph_ddl_epoch",
            "DROP SCHEMA datamorph_ddl CASCADE",
        ):
            with conn.cursor() as cur, pytest.raises(psycopg2.Error) as err:
                cur.execute(statement)
            assert err.value.pgcode == errorcodes.INSUFFICIENT_PRIVILEGE, statement
    finally:
        conn.close()


def test_getdata_and_getschemas_refuse_the_counter(seeded_database: str) -> None:
    conn = _conn(seeded_database)
    try:
        name = "datamorph_ddl.epoch"
        for call in (catalog.describe, catalog.resolve):
            with pytest.raises(PermissionDenied, match=r"datamorph_ddl\.epoch"):
                call(conn, [parse_table_name(name)], [name])
    finally:
        conn.close()


def test_the_counter_gone_leaves_getschemas_answering_and_roles_sql_restores_it(
    database: Database, database_admin_url: str, seeded_database: str, schema: str
) -> None:
    counter = catalog.DdlCounter()
    name = f"{schema}.a"
    assert _check(database, counter, name).version.startswith("ddl ")
    admin = _conn(database_admin_url)
    try:
        with admin.cursor() as cur:
            cur.execute("DROP EVENT TRIGGER datamorph_ddl_epoch; DROP SCHEMA datamorph_ddl CASCADE")
        # The prepared statement names a table that is gone: the digest answers.
        assert len(_check(database, counter, name).version) == 32
    finally:
        _roles_sql(seeded_database, database_admin_url)
        admin.close()
    assert _check(database, catalog.DdlCounter(), name).version.startswith("ddl ")


def test_roles_sql_refuses_a_counter_schema_someone_else_made(
    seeded_database: str, database_admin_url: str
) -> None:
    """The serving role may create schemas: one named as the counter's, made before roles.sql
    first runs, with a trigger on a table named as the counter, would run its trigger with
    the rights of roles.sql's runner at every DDL. roles.sql stops instead, naming it."""
    admin = _conn(database_admin_url)
    app = _conn(seeded_database)
    try:
        with admin.cursor() as cur:
            cur.execute("DROP EVENT TRIGGER datamorph_ddl_epoch; DROP SCHEMA datamorph_ddl CASCADE")
        with app.cursor() as cur:
            cur.execute(
                "CREATE SCHEMA datamorph_ddl;"
                "CREATE TABLE datamorph_ddl.epoch (slot int2 PRIMARY KEY, n int8 DEFAULT 0)"
            )
        _refused_and_not_installed(seeded_database, database_admin_url, admin)
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS datamorph_ddl CASCADE")
        _roles_sql(seeded_database, database_admin_url)
        admin.close()
        app.close()


def test_ddl_elsewhere_costs_a_digest_and_no_describe(
    database: Database, seeded_database: str, schema: str
) -> None:
    """The count moves for DDL anywhere in the database. Where an answer for the names is
    kept, the digest is asked too: DDL elsewhere leaves it as it was, and the kept answer
    is served (and kept under the new count) without a stamp or a describe; DDL on a table
    of the answer changes it, and the answer is made again."""
    cache = SchemaCache(100, 1 << 20)
    names = [f"{schema}.a"]
    parsed = [parse_table_name(n) for n in names]
    looked_up: list[Stamp] = []

    def cached(stamp: Stamp) -> bytes | None:
        looked_up.append(stamp)
        return cache.lookup(stamp)

    def call() -> Schemas[bytes, bytes]:
        looked_up.clear()
        found = database.get_schemas(
            parsed, names, 10, cached=cached, answered=cache.answer, holds=cache.holds
        )
        if found.answer is None:
            cache.assemble("success", names, found.tables, found.request)
        return found

    def elsewhere() -> None:
        with _conn(seeded_database) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {schema}.unrelated_{uuid.uuid4().hex[:8]} (x int)")
        conn.close()

    first = call()
    assert first.answer is None
    assert first.request is not None
    assert first.request.digest is None  # nothing was kept: no digest asked
    assert call().answer is not None
    elsewhere()
    relearned = call()  # kept without a digest: made again from its kept part, with one
    assert relearned.answer is None
    assert relearned.request is not None
    assert relearned.request.digest is not None
    assert len(looked_up) == 1
    elsewhere()
    passed = call()
    assert passed.answer is not None
    assert looked_up == []
    assert passed.request is not None
    assert passed.request.version != relearned.request.version
    hit = call()
    assert hit.answer == passed.answer
    assert hit.request is not None
    assert hit.request.digest is None  # the count alone: the answer is kept under it now
    with _conn(seeded_database) as conn, conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {names[0]} ADD COLUMN added int")
    conn.close()
    changed = call()
    assert changed.answer is None
    [table] = [t for t in changed.tables if isinstance(t, catalog.TableDescription)]
    assert [c["column_name"] for c in table.columns] == ["id", "v", "added"]


def test_roles_sql_refuses_a_counter_schema_made_while_it_runs(
    seeded_database: str, database_admin_url: str
) -> None:
    """The schema made by the serving role after roles.sql looked for it and before its CREATE
    SCHEMA IF NOT EXISTS (which then skips it): its owner could drop the counter's table and
    plant its own, with a trigger, in its place. A pause at CREATE SCHEMA's start (an event
    trigger of the test's) opens that window wide; roles.sql must still stop."""
    admin = _conn(database_admin_url)
    app = _conn(seeded_database)
    made: list[BaseException] = []

    def make_it_meanwhile() -> None:
        try:
            watch = _conn(database_admin_url)
            try:
                for _ in range(200):
                    with watch.cursor() as cur:
                        cur.execute(
                            "SELECT FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                            " AND query LIKE 'CREATE SCHEMA IF NOT EXISTS datamorph_ddl%'"
                        )
                        if cur.fetchone() is not None:
                            break
                    time.sleep(0.05)
            finally:
                watch.close()
            with app.cursor() as cur:
                cur.execute("CREATE SCHEMA datamorph_ddl")
        except BaseException as exc:  # reported by the test's thread
            made.append(exc)

    try:
        with admin.cursor() as cur:
            cur.execute(
                "DROP EVENT TRIGGER IF EXISTS datamorph_ddl_epoch;"
                "DROP SCHEMA IF EXISTS datamorph_ddl CASCADE;"
                "CREATE FUNCTION public.review_pause() RETURNS event_trigger LANGUAGE plpgsql"
                " AS $$ BEGIN"
                "  IF current_query() LIKE 'CREATE SCHEMA IF NOT EXISTS datamorph_ddl%' THEN"
                "    FOR i IN 1..200 LOOP"
                "      EXIT WHEN EXISTS (SELECT FROM pg_namespace WHERE nspname = 'datamorph_ddl');"
                "      PERFORM pg_sleep(0.05);"
                "    END LOOP;"
                "  END IF; END $$;"
                "CREATE EVENT TRIGGER review_pause ON ddl_command_start"
                " WHEN TAG IN ('CREATE SCHEMA') EXECUTE FUNCTION public.review_pause()"
            )
        thread = threading.Thread(target=make_it_meanwhile)
        thread.start()
        try:
            _refused_and_not_installed(seeded_database, database_admin_url, admin)
        finally:
            thread.join()
        assert made == []
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "DROP EVENT TRIGGER IF EXISTS review_pause;"
                "DROP FUNCTION IF EXISTS public.review_pause();"
                "DROP EVENT TRIGGER IF EXISTS datamorph_ddl_epoch;"
                "DROP SCHEMA IF EXISTS datamorph_ddl CASCADE"
            )
        _roles_sql(seeded_database, database_admin_url)
        admin.close()
        app.close()
