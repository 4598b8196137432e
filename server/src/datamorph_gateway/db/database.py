"""The database layer's front door: the operations the servicer asks for.

Each operation borrows a pooled connection for one transaction whose
statement timeout is the caller's remaining time, and turns psycopg2 errors
into request errors here, outside the pool, so the pool still sees (and
discards) connections that broke. An operation given a ``CancelScope``
attaches its connection to it while SQL runs, so that the scope's deadline
(which the session cannot lift) or the caller leaving cancels the query.

Caller SQL with ``read_only`` and streams run on the read-only role's pool when
``DB_READONLY_USER`` is set, all SQL of a principal with a database user of its own on
that user's pool, everything else on the serving role's. ``roles`` builds those pools on
one budget and checks each role before it serves.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import psycopg2

from datamorph_gateway.config import DatabaseSettings, LimitsSettings
from datamorph_gateway.db import catalog, query, sampling
from datamorph_gateway.db.bounded import Limits
from datamorph_gateway.db.budget import Budget
from datamorph_gateway.db.cancel import CancelScope
from datamorph_gateway.db.connect import DatabaseLogin
from datamorph_gateway.db.decoding import ColumnType, TypeCatalog, decode_rows
from datamorph_gateway.db.health import HealthProbe
from datamorph_gateway.db.names import TableName
from datamorph_gateway.db.pool import Connection, ConnectionPool
from datamorph_gateway.db.roles import PasswordSource, RolePools
from datamorph_gateway.db.sqltext import Script, Statement
from datamorph_gateway.db.stamps import RequestStamp, Stamp
from datamorph_gateway.errors import GatewayError, Unavailable, from_database_error

log = logging.getLogger(__name__)
T = TypeVar("T")
A = TypeVar("A")


@dataclass(frozen=True)
class Sample:
    """Sampled rows of one table, JSON-ready, with their column types."""

    columns: list[ColumnType]
    keys: list[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Schemas(Generic[T, A]):
    """GetSchemas' answer as the database gave it: a kept answer, or one entry per name."""

    tables: list[catalog.TableDescription | T]  # in request order; empty with ``answer``
    request: RequestStamp | None = None  # the digest checked, when ``answered`` was given
    answer: A | None = None  # what ``answered`` held for ``request``


class Database:
    """PostgreSQL as the gateway uses it: a pool, type and relation caches, five operations."""

    def __init__(
        self,
        settings: DatabaseSettings,
        limits: LimitsSettings,
        dsn: str,
        *,
        login_passwords: PasswordSource | None = None,
    ) -> None:
        self.types = TypeCatalog()
        self.relations = catalog.RelationCache(settings.relation_cache_ttl_s)
        self.ddl_counter = catalog.DdlCounter()
        self._allow_system = settings.allow_system_schemas
        self._max_result_bytes = limits.max_result_bytes
        self.roles = RolePools(settings, dsn, login_passwords)
        self.budget = self.roles.budget
        self.pool = self.roles.serving
        self.reader_pool = self.roles.reader
        self._terminate = self.roles.terminate
        self.health = HealthProbe(
            self.roles.dsns.serving,
            connect_kwargs={"application_name": f"{settings.db_application_name} health"},
        )

    def _pool_for(self, login: DatabaseLogin | None, *, read_only: bool) -> ConnectionPool:
        """The pool a request runs on: its principal's own, the reader's, or the serving one."""
        if login is not None:
            return self.roles.login(login)
        if read_only and self.reader_pool is not None:
            return self.reader_pool
        return self.pool

    def close(self) -> None:
        self.health.close()
        self.roles.close()

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
        cached: Callable[[Stamp], T | None] | None = None,
        answered: Callable[[RequestStamp], A | None] | None = None,
        holds: Callable[[RequestStamp], bool] | None = None,
    ) -> Schemas[T, A]:
        """Describe each name, or give what ``cached`` holds for its current stamp.

        With ``answered``, one statement first versions the whole request (db/stamps.py: the
        DDL counter, else a digest), and what ``answered`` holds for that version is the
        answer: a warm call's only statement. When the counter moved and ``holds`` says an
        answer is kept for these names, the digest is asked too: DDL elsewhere in the database
        leaves it as it was, and ``answered`` then gives the kept answer for it.
        With ``cached``, one statement stamps every name and a second describes, with their
        own stamps, only those ``cached`` has nothing current for.
        """

        def work(conn: Connection, budget: Budget) -> Schemas[T, A]:
            allow = self._allow_system
            request = None
            if answered is not None:
                request = self.ddl_counter.check(conn, names, originals, budget)
                answer = answered(request)
                if answer is None and request.digest is None and holds and holds(request):
                    digest = catalog.check(conn, names, originals, budget).version
                    request = dataclasses.replace(request, digest=digest)
                    answer = answered(request)
                if answer is not None:
                    return Schemas([], request, answer)
            if cached is None:
                described = catalog.describe(conn, names, originals, budget, allow_system=allow)
                return Schemas(list(described), request)
            found: list[catalog.TableDescription | T | None] = [
                cached(stamp)
                for stamp in catalog.stamps(conn, names, originals, budget, allow_system=allow)
            ]
            stale = [i for i, hit in enumerate(found) if hit is None]
            if stale:
                described = catalog.describe(
                    conn,
                    [names[i] for i in stale],
                    [originals[i] for i in stale],
                    budget,
                    allow_system=allow,
                    stamped=True,
                )
                for i, description in zip(stale, described, strict=True):
                    found[i] = description
            return Schemas([hit for hit in found if hit is not None], request)

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
            limits = Limits(max_rows, self._max_result_bytes)
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
                    batch=Limits(batch_rows, self._max_result_bytes),
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
