"""Least privilege: the gateway refuses to serve as a role that could take over the server.

Caller SQL runs as the role the gateway logs in as. A superuser, or a member of a
predefined role that runs programs or reads and writes files on the database server or
signals other roles' sessions, turns ExecuteQuery into a shell on the database host
(``COPY ... TO PROGRAM``, ``pg_read_file``, ``lo_export``) whatever the gateway's own SQL
checks say. So every role the gateway uses is checked: at start-up (a refusal stops the
start with one line naming the role and the fix) and on every new pooled connection
(a database that was unreachable at start-up, or a role granted more later, is caught
there and the connection refused). ``DB_ALLOW_PRIVILEGED=true`` turns the refusal into a
WARNING at every start, for the rare deployment that knows what it is doing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg2.extensions as ext

from datamorph_gateway.errors import FailedPrecondition

__all__ = ["PRIVILEGED_ROLES", "RoleFacts", "RoleGuard", "inspect_role"]

log = logging.getLogger(__name__)

# Predefined roles that reach outside the database or into other roles' sessions.
PRIVILEGED_ROLES = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_signal_backend",
)

# Run with a search_path of pg_catalog alone (set just before, for this transaction), so a
# view or function the role planted (public.pg_roles, public.pg_has_role) cannot answer.
_PIN_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)"
_QUERY = """
SELECT current_user::text,
       r.rolsuper,
       ARRAY(SELECT p.rolname::text FROM pg_catalog.pg_roles p
              WHERE p.rolname = ANY(%s::name[])
                AND pg_catalog.pg_has_role(current_user, p.oid, 'MEMBER')
              ORDER BY p.rolname)
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user
"""


@dataclass(frozen=True)
class RoleFacts:
    """What the connected role may do beyond its own grants."""

    name: str
    superuser: bool
    privileged: tuple[str, ...]

    @property
    def too_powerful(self) -> bool:
        return self.superuser or bool(self.privileged)

    def describe(self) -> str:
        if self.superuser:
            return "is a superuser"
        return "is a member of " + ", ".join(self.privileged)


def inspect_role(conn: ext.connection) -> RoleFacts:
    """The facts about the role ``conn`` is logged in as (one catalog query)."""
    autocommit = conn.autocommit  # the pin needs a transaction, which ends with the check
    with conn.cursor() as cur:
        if autocommit:
            cur.execute("BEGIN")
        try:
            cur.execute(_PIN_SEARCH_PATH)
            cur.execute(_QUERY, (list(PRIVILEGED_ROLES),))
            row = cur.fetchone()
        finally:
            if autocommit:
                cur.execute("ROLLBACK")
            else:
                conn.rollback()
    if row is None:  # pragma: no cover - current_user always has a pg_roles row
        raise FailedPrecondition("the database role of this connection is not in pg_roles")
    name, superuser, privileged = row
    return RoleFacts(str(name), bool(superuser), tuple(privileged))


class RoleGuard:
    """Checks the roles the gateway uses; see the module's docstring."""

    def __init__(self, *, allow_privileged: bool) -> None:
        self.allow_privileged = allow_privileged
        self._warned: set[str] = set()

    def message(self, facts: RoleFacts, purpose: str) -> str:
        """The one line that names the role, what is wrong and the fix."""
        return (
            f"database role {facts.name!r} ({purpose}) {facts.describe()}: the gateway does not "
            "run callers' SQL as a role that can reach the server's files and programs or other "
            "sessions; connect as a role without those privileges (deploy/sql/roles.sql creates "
            "datamorph_app and datamorph_reader; docs/security.md) or set "
            "DB_ALLOW_PRIVILEGED=true to accept the risk"
        )

    def check(self, conn: ext.connection, purpose: str) -> RoleFacts:
        """Refuse (FailedPrecondition) a too-powerful role unless it is allowed; then warn once."""
        facts = inspect_role(conn)
        if facts.too_powerful:
            if not self.allow_privileged:
                raise FailedPrecondition(self.message(facts, purpose), reason="PRIVILEGED_ROLE")
            if facts.name not in self._warned:
                self._warned.add(facts.name)
                log.warning(
                    "serving as database role %r (%s), which %s, because DB_ALLOW_PRIVILEGED=true: "
                    "callers' SQL can reach the database server's files and programs",
                    facts.name,
                    purpose,
                    facts.describe(),
                )
        return facts
