"""Tables the gateway keeps in the served database (workflow logs, idempotency keys).

Each owner hands its ``CREATE … IF NOT EXISTS`` here. It runs once, under one advisory
lock shared by every owner, so replicas starting together do not race on the catalog;
then every use is a short transaction on the pool of the tables' role, bounded by a
statement timeout, its psycopg2 errors turned into request errors. That pool is the state
role's (``DB_STATE_USER``, which ``roles.sql`` makes the owner of the schema) or else the
serving one (``RolePools.own_tables``). These transactions may use the reserved share
(``DB_POOL_RESERVED_READS``): they are short and the gateway's own, so caller SQL filling
its share does not stop workflow logs or idempotency keys.

The schema is created only when missing: ``CREATE SCHEMA IF NOT EXISTS`` would need CREATE
on the database even when the schema exists, and the state role has no such right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql

from datamorph_gateway.db.pool import Connection, ConnectionPool
from datamorph_gateway.errors import ConfigError, Unavailable, from_database_error
from datamorph_gateway.excerpts import first_line

log = logging.getLogger(__name__)

# The schema of the gateway's own tables. GetData and GetSchemas refuse to read it
# (``catalog.is_system_schema``): it holds other callers' workflow logs and idempotency keys.
SCHEMA = "datamorph_gateway"
# Any constant works; it only has to be the same in every gateway that might create tables.
DDL_LOCK_KEY = 0x444D_4757_4C4F_4753  # "DMGWLOGS"


class OwnedTables:
    """One owner's tables: created on first use, then used in short transactions."""

    def __init__(
        self,
        pool: ConnectionPool,
        ddl: str | sql.Composable,
        *,
        timeout_s: float,
        name: str,
        what: str,
        remedy: str,
        schema: str = SCHEMA,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._ddl = ddl
        self._timeout_s = timeout_s
        self._name = name  # for the warning: "workflow log tables not checked yet"
        self._what = what  # for the error: "cannot create <what>: … (grant CREATE …, or <remedy>)"
        self._remedy = remedy
        self._ready = False

    def ensure(self, then: Callable[[], object] | None = None) -> None:
        """Create the tables now, then run ``then`` (a purge); done again on first use if it failed.

        A database that cannot be reached now is only a warning (the pool
        reconnects later), and nothing at all when it is known to be down (the pool
        said so); one that refuses the DDL is a configuration error.
        """
        if self._pool.unreachable:
            log.debug("%s not checked yet: the database is unavailable", self._name)
            return
        try:
            self._create()
            if then is not None:
                then()
        except Unavailable as exc:
            log.warning("%s not checked yet: %s", self._name, exc.message)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            log.warning("%s not checked yet: %s", self._name, first_line(exc))
        except psycopg2.Error as exc:
            raise ConfigError(
                f"cannot create {self._what}: {first_line(exc)} "
                f"(set DB_STATE_USER to the owner of schema {self._schema} (roles.sql makes "
                f"datamorph_state), grant CREATE on the database, or {self._remedy})"
            ) from None

    def _create(self) -> None:
        with self._pool.connection(self._timeout_s, reserved=True) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_KEY,))
                cur.execute(
                    "SELECT FROM pg_catalog.pg_namespace WHERE nspname = %s", (self._schema,)
                )
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self._schema)))
                cur.execute(self._ddl)
            conn.commit()
        self._ready = True

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction, committed when the block ends, limited to ``timeout_s``."""
        try:
            if not self._ready:
                self._create()
            with self._pool.connection(self._timeout_s, reserved=True) as conn:
                with conn.cursor() as cur:
                    cur.execute(
                        "SET LOCAL statement_timeout = %s", (max(1, int(self._timeout_s * 1000)),)
                    )
                yield conn
                conn.commit()
        except psycopg2.Error as exc:
            raise from_database_error(exc) from exc
