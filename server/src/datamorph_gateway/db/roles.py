"""The roles the gateway connects as: a pool for each, and each checked before it serves.

Two pools when ``DB_READONLY_USER`` is set: caller SQL with ``read_only`` and streams run
as that role (SELECT only: the database itself refuses a write), everything else as the
serving role. A principal with a database user of its own (``DatabaseLogin``) gets a pool
of its own, opened on its first call, for all of its SQL. Every pool shares one
``ConnectionBudget`` (``DB_POOL_MAX`` connections in all), and every role is checked
before it serves (``privileges``): all of them at start-up (``verify``), and each new
pooled connection again. The watchdog role (``DB_WATCHDOG_USER``) ends a backend that
ignores cancels (``terminate``). The state role (``DB_STATE_USER``) owns the gateway's own
tables (workflow logs, idempotency keys, run leases) and has a small pool of its own
(``state``), so caller SQL, which runs as the serving role, cannot reach them; without it
they are on the serving pool (``own_tables``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

import psycopg2
import psycopg2.extensions as ext
from psycopg2.extensions import parse_dsn

from datamorph_gateway.config import DatabaseSettings
from datamorph_gateway.db import decoding
from datamorph_gateway.db.connect import (
    DatabaseLogin,
    RoleDsns,
    catalog_only,
    describe_login,
    refusal,
)
from datamorph_gateway.db.connection_budget import ConnectionBudget
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.db.prepared import PreparingConnection
from datamorph_gateway.db.privileges import RoleGuard
from datamorph_gateway.errors import ConfigError, FailedPrecondition, Unavailable
from datamorph_gateway.excerpts import first_line
from datamorph_gateway.observability import metrics

log = logging.getLogger(__name__)


def _removed(login: DatabaseLogin) -> str:
    return (
        f"the auth policy no longer uses this login of database user {login.user!r} "
        "(the principal was removed or its database login changed)"
    )


# The state role's pool: the gateway's own short transactions, a few at a time.
STATE_POOL_MAX = 4

# Where a principal's own database user gets its password (dblogins.LoginPasswords):
# (login, host, port) -> a callable asked at each connect, or None for the DSN's own.
PasswordSource = Callable[[DatabaseLogin, str, int], Callable[[], str] | None]


class RolePools:
    """The serving role's pool, the read-only role's, the state role's and each principal's,
    on one budget."""

    def __init__(
        self, settings: DatabaseSettings, dsn: str, login_passwords: PasswordSource | None
    ) -> None:
        self.dsns = RoleDsns(settings, dsn)
        self.guard = RoleGuard(allow_privileged=settings.db_allow_privileged)
        self._settings = settings
        self._login_passwords = login_passwords
        self._logins: dict[DatabaseLogin, ConnectionPool] = {}
        # The logins the auth policy in force names, once a reload has said (``retain``):
        # a call authorized under an older policy opens no pool for a login it dropped.
        self._named: frozenset[DatabaseLogin] | None = None
        self._logins_lock = threading.Lock()
        self.budget = ConnectionBudget(settings.db_pool_max, settings.pool_reserved_reads())
        # DB_POOL_MAX caps every pool of the process together: that is their limit.
        self._limit = metrics.pool_gauge(settings.db_pool_max)
        self.serving = self._pool(self.dsns.serving, "serving role")
        # Read-only caller SQL: a pool of its own, opened on first use, as large as the main one.
        self.reader = (
            None
            if self.dsns.reader is None
            else self._pool(self.dsns.reader, "read-only role", min_size=0, reserved=0)
        )
        # The gateway's own tables: a few connections, opened on first use, whose names
        # resolve in pg_catalog alone (the app role owns public, and a function of its own
        # there, a closer match than a built-in, would otherwise run as the state role).
        # Every borrower asks for the reserved share (``OwnedTables``), and the shared
        # budget keeps caller SQL in all pools below DB_POOL_MAX minus that share, so
        # caller SQL cannot starve them.
        self.state = (
            None
            if self.dsns.state is None
            else self._pool(
                catalog_only(self.dsns.state),
                "state role",
                min_size=0,
                max_size=min(STATE_POOL_MAX, settings.db_pool_max),
                reserved=0,
            )
        )

    @property
    def own_tables(self) -> ConnectionPool:
        """The pool the gateway's own tables are used on: the state role's when
        ``DB_STATE_USER`` is set, the serving role's otherwise."""
        return self.serving if self.state is None else self.state

    def _pool(
        self,
        dsn: str,
        purpose: str,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        reserved: int | None = None,
        password: Callable[[], str] | None = None,
    ) -> ConnectionPool:
        settings = self._settings
        base_options = parse_dsn(dsn).get("options", "")

        def on_connect(conn: ext.connection) -> None:
            self.guard.check(conn, purpose)
            decoding.install(conn)

        return ConnectionPool(
            dsn,
            min_size=settings.db_pool_min if min_size is None else min_size,
            max_size=settings.db_pool_max if max_size is None else max_size,
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

    def login(self, login: DatabaseLogin) -> ConnectionPool:
        """The pool of a principal's own database user, opened on its first call."""
        with self._logins_lock:
            pool = self._logins.get(login)
            if pool is None:
                if self._named is not None and login not in self._named:
                    raise Unavailable(_removed(login), reason="LOGIN_REMOVED")
                host, port = self.dsns.address()
                password = (
                    None
                    if self._login_passwords is None
                    else self._login_passwords(login, host, port)
                )
                pool = self._pool(
                    self.dsns.login(login),
                    f"database user {login.user!r}",
                    min_size=0,
                    reserved=0,
                    password=password,
                )
                self._logins[login] = pool
            return pool

    def retain(self, logins: Collection[DatabaseLogin]) -> None:
        """Close the pools of every login not in ``logins`` (those the reloaded auth policy
        names) and open none for them from now on: a principal the policy removed, or gave
        another database user, secret or IAM setting, keeps no session open with its old
        login (idle connections close now, busy ones when their call ends)."""
        with self._logins_lock:
            self._named = frozenset(logins)
            gone = {login: pool for login, pool in self._logins.items() if login not in logins}
            for login in gone:
                del self._logins[login]
        for login, pool in gone.items():
            pool.close(_removed(login), reason="LOGIN_REMOVED")
            self.budget.forget(pool)
            log.info(
                "closed a pool of database user %r: the auth policy no longer uses that login",
                login.user,
            )

    def verify(self) -> None:
        """Check every role the gateway will use, now.

        This is the gateway's one connect attempt at start-up. A role the database refuses
        for good (wrong password, unknown role or database, unknown host: ``refusal``) or
        one too privileged is a ConfigError, whose one line gives the server's reason.
        A database that cannot be reached yet is not an error (the gateway starts and
        answers UNAVAILABLE until it is up): one warning, the pools are told (so they try
        nothing more at start-up and do not say it again), and each new pooled connection
        is checked anyway.
        """
        settings = self._settings
        roles = [("serving role", self.dsns.serving)]
        if self.dsns.reader is not None:
            roles.append(("read-only role", self.dsns.reader))
        if self.dsns.watchdog is not None:
            roles.append(("watchdog role", self.dsns.watchdog))
        if self.dsns.state is not None:
            roles.append(("state role", self.dsns.state))
        for purpose, dsn in roles:
            try:
                conn = psycopg2.connect(
                    catalog_only(dsn),
                    connect_timeout=max(2, int(settings.db_connect_timeout_s)),
                    application_name=f"{settings.db_application_name} check",
                )
            except psycopg2.OperationalError as exc:
                reason = refusal(exc)
                if reason is not None:
                    raise ConfigError(
                        f"cannot connect to the database as the {purpose} "
                        f"({describe_login(dsn)}): {reason}"
                    ) from None
                log.warning(
                    "the database is not reachable at start-up (%s): the gateway answers "
                    "UNAVAILABLE until it is, and checks each role when it connects",
                    first_line(exc),
                )
                for pool in (self.serving, self.reader, self.state):
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
        if self.dsns.state is None:
            log.info(
                "DB_STATE_USER is not set: the gateway's own tables (workflow logs, "
                "idempotency keys, run leases) belong to the serving role, so callers who may "
                "write can also read and change them (docs/security.md)"
            )
        if self.dsns.unverified_remote:
            log.warning(
                "the connection to the database at %s is not verified (sslmode=%s): set "
                "DB_SSLMODE=verify-full and DB_SSLROOTCERT (docs/security.md)",
                self.dsns.host,
                self.dsns.sslmode,
            )

    def terminate(self, pid: int) -> None:
        """End a backend that ignores cancels, from a connection of its own.

        As DB_WATCHDOG_USER when set (the embedded cluster revokes the signal functions
        from everyone else), otherwise as the serving role, which may end its own backends.
        """
        conn = psycopg2.connect(
            catalog_only(self.dsns.watchdog or self.dsns.serving),
            connect_timeout=5,
            application_name=f"{self._settings.db_application_name} watchdog",
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (pid,))
        finally:
            conn.close()

    def close(self) -> None:
        self._limit.close()
        self.serving.close()
        if self.reader is not None:
            self.reader.close()
        if self.state is not None:
            self.state.close()
        with self._logins_lock:
            for pool in self._logins.values():
                pool.close()
