"""The database layer's front door: the operations the servicer asks for.

Each operation borrows a pooled connection for one transaction whose
statement timeout is the caller's remaining time, and turns psycopg2 errors
into request errors here, outside the pool, so the pool still sees (and
discards) connections that broke. An operation given a ``CancelScope``
attaches its connection to it while SQL runs, so that the scope's deadline
(which the session cannot lift) or the caller leaving cancels the query.

Two pools when ``DB_READONLY_USER`` is set: caller SQL with ``read_only`` and streams run
as that role (SELECT only: the database itself refuses a write), everything else as the
serving role. A principal with a database user of its own (``DatabaseLogin``) gets a pool
of its own, opened on its first call, for all of its SQL. Every pool shares one
``ConnectionBudget`` (``DB_POOL_MAX`` connections in all), and every role is checked
before it serves (``privileges``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import psycopg2
import psycopg2.extensions as ext
from psycopg2.extensions import parse_dsn

from datamorph_gateway.config import Settings
from datamorph_gateway.db import catalog, decoding, query, sampling
from datamorph_gateway.db.budget import ConnectionBudget
from datamorph_gateway.db.cancel import CancelScope
from datamorph_gateway.db.connect import (
    DatabaseLogin,
    RoleDsns,
    catalog_only,
    describe_login,
    refusal,
)
from datamorph_gateway.db.decoding import ColumnType, TypeCatalog, decode_rows
from datamorph_gateway.db.health import HealthProbe
from datamorph_gateway.db.names import TableName
from datamorph_gateway.db.pool import Connection, ConnectionPool
from datamorph_gateway.db.privileges import RoleGuard
from datamorph_gateway.db.sqltext import Script, Statement
from datamorph_gateway.db.statements import Budget, PreparingConnection
from datamorph_gateway.errors import (
    ConfigError,
    FailedPrecondition,
    GatewayError,
    Unavailable,
    from_database_error,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """Sampled rows of one table, JSON-ready, with their column types."""

    columns: list[ColumnType]
    keys: list[str]
    rows: Sequence[Sequence[Any]]


class Database:
    """PostgreSQL as the gateway uses it: a pool, type and relation caches, five operations."""

    def __init__(
        self,
        settings: Settings,
        dsn: str,
        *,
        login_passwords: Callable[[DatabaseLogin, str, int], Callable[[], str] | None]
        | None = None,
    ) -> None:
        self.types = TypeCatalog()
        self.relations = catalog.RelationCache(settings.relation_cache_ttl_s)
        self._allow_system = settings.allow_system_schemas
        self._max_result_bytes = settings.max_result_bytes
        self.dsns = RoleDsns(settings, dsn)
        self.guard = RoleGuard(allow_privileged=settings.db_allow_privileged)
        self._connect_timeout_s = settings.db_connect_timeout_s
        self._application_name = settings.db_application_name
        self._settings = settings
        self._login_passwords = login_passwords
        self._logins: dict[DatabaseLogin, ConnectionPool] = {}
        self._logins_lock = threading.Lock()
        self.budget = ConnectionBudget(settings.db_pool_max, settings.pool_reserved_reads())
        self.pool = self._pool(settings, self.dsns.serving, "serving role")
        # Read-only caller SQL: a pool of its own, opened on first use, as large as the main one.
        self.reader_pool = (
            None
            if self.dsns.reader is None
            else self._pool(settings, self.dsns.reader, "read-only role", min_size=0, reserved=0)
        )
        self.health = HealthProbe(
            self.dsns.serving,
            connect_kwargs={"application_name": f"{settings.db_application_name} health"},
        )

    def _pool(
        self,
        settings: Settings,
        dsn: str,
        purpose: str,
        *,
        min_size: int | None = None,
        reserved: int | None = None,
        password: Callable[[], str] | None = None,
    ) -> ConnectionPool:
        base_options = parse_dsn(dsn).get("options", "")

        def on_connect(conn: ext.connection) -> None:
            self.guard.check(conn, purpose)
            decoding.install(conn)

        return ConnectionPool(
            dsn,
            min_size=settings.db_pool_min if min_size is None else min_size,
            max_size=settings.db_pool_max,
            reserved=settings.pool_reserved_reads() if reserved is None else reserved,
            acquire_timeout_s=settings.db_pool_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
            connect_attempts=settings.db_connect_attempts,
            backoff_s=settings.db_connect_backoff_s,
            connect_kwargs={
                # Notices and warnings are not sent at all: nothing reads them, and psycopg2
                # holds every one a statement raises until it ends (30 of 8 MB: 240 MB).
                "options": decoding.startup_options(base_options) + " -c client_min_messages=error",
                "application_name": settings.db_application_name,
                "connection_factory": (
                    PreparingConnection if settings.db_prepared_statements else ext.connection
                ),
            },
            on_connect=on_connect,
            budget=self.budget,
            password=password,
        )

    def _pool_for(self, login: DatabaseLogin | None, *, read_only: bool) -> ConnectionPool:
        """The pool a request runs on: its principal's own, the reader's, or the serving one."""
        if login is not None:
            return self._login_pool(login)
        if read_only and self.reader_pool is not None:
            return self.reader_pool
        return self.pool

    def _login_pool(self, login: DatabaseLogin) -> ConnectionPool:
        with self._logins_lock:
            pool = self._logins.get(login)
            if pool is None:
                host, port = self.dsns.address()
                password = (
                    None
                    if self._login_passwords is None
                    else self._login_passwords(login, host, port)
                )
                pool = self._pool(
                    self._settings,
                    self.dsns.login(login),
                    f"database user {login.user!r}",
                    min_size=0,
                    reserved=0,
                    password=password,
                )
                self._logins[login] = pool
            return pool

    def verify_roles(self) -> None:
        """Check every role the gateway will use, now.

        This is the gateway's one connect attempt at start-up. A role the database refuses
        for good (wrong password, unknown role or database, unknown host: ``refusal``) or
        one too privileged is a ConfigError, whose one line gives the server's reason.
        A database that cannot be reached yet is not an error (the gateway starts and
        answers UNAVAILABLE until it is up): one warning, the pools are told (so they try
        nothing more at start-up and do not say it again), and each new pooled connection
        is checked anyway.
        """
        roles = [("serving role", self.dsns.serving)]
        if self.dsns.reader is not None:
            roles.append(("read-only role", self.dsns.reader))
        if self.dsns.watchdog is not None:
            roles.append(("watchdog role", self.dsns.watchdog))
        for purpose, dsn in roles:
            try:
                conn = psycopg2.connect(
                    catalog_only(dsn),
                    connect_timeout=max(2, int(self._connect_timeout_s)),
                    application_name=f"{self._application_name} check",
                )
            except psycopg2.OperationalError as exc:
                reason = refusal(exc)
                if reason is not None:
                    raise ConfigError(
                        f"cannot connect to the database as the {purpose} "
                        f"({describe_login(dsn)}): {reason}"
                    ) from None
                text = str(exc).strip()
                log.warning(
                    "the database is not reachable at start-up (%s): the gateway answers "
                    "UNAVAILABLE until it is, and checks each role when it connects",
                    text.splitlines()[0] if text else type(exc).__name__,
                )
                for pool in (self.pool, self.reader_pool):
                    if pool is not None:
                        pool.assume_unreachable()
                break  # the other roles would only say the same
            try:
                self.guard.check(conn, purpose)
            except FailedPrecondition as exc:
                raise ConfigError(exc.message) from None
            finally:
                conn.close()
        if self.dsns.reader is None:
            log.info(
                "DB_READONLY_USER is not set: read_only requests run as the serving role in a "
                "read-only transaction, which is not a security boundary (docs/security.md)"
            )
        if self.dsns.unverified_remote:
            log.warning(
                "the connection to the database at %s is not verified (sslmode=%s): set "
                "DB_SSLMODE=verify-full and DB_SSLROOTCERT (docs/security.md)",
                self.dsns.host,
                self.dsns.sslmode,
            )

    def close(self) -> None:
        self.health.close()
        self.pool.close()
        if self.reader_pool is not None:
            self.reader_pool.close()
        with self._logins_lock:
            for pool in self._logins.values():
                pool.close()

    def _terminate(self, pid: int) -> None:
        """End a backend that ignores cancels, from a connection of its own.

        As DB_WATCHDOG_USER when set (the embedded cluster revokes the signal functions
        from everyone else), otherwise as the serving role, which may end its own backends.
        """
        conn = psycopg2.connect(
            catalog_only(self.dsns.watchdog or self.dsns.serving),
            connect_timeout=5,
            application_name=f"{self._application_name} watchdog",
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (pid,))
        finally:
            conn.close()

    # -- transactions --------------------------------------------------------

    @contextmanager
    def _transaction(
        self,
        timeout_s: float,
        *,
        read_only: bool,
        reset_session: bool = False,
        scope: CancelScope | None = None,
        login: DatabaseLogin | None = None,
    ) -> Iterator[Connection]:
        start = time.monotonic()
        pool = self._pool_for(login, read_only=read_only)
        try:
            with (
                pool.connection(timeout_s, reset_session=reset_session) as conn,
                _attached(scope, conn, self._terminate),
            ):
                remaining = max(timeout_s - (time.monotonic() - start), 0.001)
                begin = "SET TRANSACTION READ ONLY; " if read_only else ""
                with conn.cursor() as cur:
                    cur.execute(
                        begin + "SET LOCAL statement_timeout = %s",
                        (query.statement_timeout_ms(remaining),),
                    )
                yield conn
                if scope is not None:
                    scope.check()  # a query that outlived its limit commits nothing
                conn.commit()
        except psycopg2.Error as exc:
            raise _error(exc, scope) from exc

    def _read(
        self,
        timeout_s: float,
        work: Callable[[Connection, Budget], T],
        scope: CancelScope | None = None,
        login: DatabaseLogin | None = None,
    ) -> T:
        """Run a read on an autocommit connection, each statement carrying the time left.

        No BEGIN and no COMMIT: two round trips fewer than a transaction. A
        read whose connection died (a database restart) is tried once more on
        a fresh one, since reads are idempotent; the pool has dropped the dead one.
        """
        budget = Budget(timeout_s)
        for attempt in (1, 2):
            try:
                pool = self._pool_for(login, read_only=False)
                with (
                    pool.connection(budget.remaining_ms() / 1000, reserved=True) as conn,
                    _attached(scope, conn),
                ):
                    conn.autocommit = True
                    try:
                        return work(conn, budget)
                    finally:
                        if not conn.closed:
                            conn.autocommit = False
            except psycopg2.Error as exc:
                error = _error(exc, scope)
                if not isinstance(error, Unavailable) or attempt == 2:
                    raise error from exc
                log.info("database connection lost during a read; retrying once")
        raise AssertionError("unreachable")

    # -- operations ------------------------------------------------------------

    def get_schemas(
        self,
        names: Sequence[TableName],
        originals: Sequence[str],
        timeout_s: float,
        *,
        scope: CancelScope | None = None,
        login: DatabaseLogin | None = None,
    ) -> list[catalog.TableDescription]:
        def work(conn: Connection, budget: Budget) -> list[catalog.TableDescription]:
            return catalog.describe(conn, names, originals, budget, allow_system=self._allow_system)

        return self._read(timeout_s, work, scope, login)

    def get_data(
        self,
        names: Sequence[TableName],
        originals: Sequence[str],
        limit: int,
        timeout_s: float,
        *,
        scope: CancelScope | None = None,
        login: DatabaseLogin | None = None,
    ) -> list[Sample]:
        def work(conn: Connection, budget: Budget) -> list[Sample]:
            samples = []
            for taken in sampling.sample_tables(
                conn,
                names,
                originals,
                limit,
                budget,
                self.relations,
                allow_system=self._allow_system,
            ):
                description = taken.description
                columns = self.types.describe(conn, [d.type_code for d in description])
                keys = [d.name for d in description]
                samples.append(Sample(columns, keys, decode_rows(columns, taken.rows)))
            return samples

        return self._read(timeout_s, work, scope, login)

    def execute(
        self,
        script: Script,
        params: Sequence[Any] | None,
        *,
        read_only: bool,
        max_rows: int,
        timeout_s: float,
        scope: CancelScope | None = None,
        login: DatabaseLogin | None = None,
    ) -> query.QueryResult:
        """Run a caller's SQL and commit; any error rolls all of it back."""
        with self._transaction(
            timeout_s, read_only=read_only, reset_session=True, scope=scope, login=login
        ) as conn:
            limits = query.Limits(max_rows, self._max_result_bytes)
            return query.run(conn, self.types, script=script, params=params, limits=limits)

    def stream(
        self,
        statement: Statement,
        params: Sequence[Any] | None,
        *,
        batch_rows: int,
        timeout_s: float,
        scope: CancelScope | None = None,
        login: DatabaseLogin | None = None,
    ) -> Iterator[query.Batch]:
        """Stream a read-only query's rows; the connection is held until the stream ends.

        A caller that stops early rolls the transaction back and frees the
        connection: the scope's cancel interrupts a batch being fetched, a
        fired scope stops the stream before the next fetch, and closing the
        generator (what a dropped gRPC stream does) ends the transaction.
        """
        with self._transaction(
            timeout_s, read_only=True, reset_session=True, scope=scope, login=login
        ) as conn:
            # Closed explicitly: its named cursor must go before the connection is released.
            batches = cast(
                "Generator[query.Batch, None, None]",
                query.stream(
                    conn,
                    self.types,
                    statement=statement,
                    params=params,
                    batch=query.Limits(batch_rows, self._max_result_bytes),
                ),
            )
            try:
                for batch in batches:
                    yield batch
                    if scope is not None:
                        scope.check()
            finally:
                batches.close()

    def check(self, timeout_s: float) -> float:
        """Round-trip to the database on the health check's own connection, never the pool's.

        The latency in seconds, or a request error.
        """
        start = time.monotonic()
        self.health.check(timeout_s)
        return time.monotonic() - start


def _attached(
    scope: CancelScope | None, conn: Connection, terminate: Callable[[int], None] | None = None
) -> AbstractContextManager[Connection]:
    return nullcontext(conn) if scope is None else scope.attached(conn, terminate)


def _error(exc: psycopg2.Error, scope: CancelScope | None) -> GatewayError:
    """The request error for a database error: the scope's own when it stopped the query.

    It keeps the SQLSTATE (57014 for a cancelled statement), as the database's own errors do.
    """
    stopped = scope.error() if scope is not None else None
    if stopped is None:
        return from_database_error(exc)
    if exc.pgcode:
        stopped.metadata["sqlstate"] = exc.pgcode
    return stopped
