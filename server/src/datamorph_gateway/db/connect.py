"""How the gateway connects: the DSN of each role it uses, and TLS to a remote database.

- ``DB_SSLMODE`` left empty means ``verify-full`` for a database that is not on this host
  (the certificate must chain to ``DB_SSLROOTCERT``, or libpq's default
  ``~/.postgresql/root.crt``, and name the host), so a plaintext or unverified connection
  to a remote database happens only when configured explicitly: with ``DB_SSLMODE`` or
  with ``sslmode`` in ``DATABASE_URL``. On loopback and Unix sockets libpq's own default
  stays.
- ``DB_READONLY_USER``, ``DB_WATCHDOG_USER`` and ``DB_STATE_USER`` are logins to the same
  database as the serving DSN with another role; their passwords come from
  ``DB_READONLY_PASSWORD`` / ``DB_WATCHDOG_PASSWORD`` / ``DB_STATE_PASSWORD``, or from the
  DSN's ``passfile`` (which the embedded database uses).
- A failed connect is either for good (``refusal``: the server refused the login, the
  database or the host does not exist), which retrying cannot mend, or for now (refused,
  timed out, starting up, out of connection slots; TLS errors too, since the CA bundle
  is read again at every connect).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg2.extensions import make_dsn, parse_dsn

from datamorph_gateway.config import DatabaseSettings, is_loopback

__all__ = ["DatabaseLogin", "RoleDsns", "catalog_only", "describe_login", "is_local", "refusal"]

# What libpq says when a connect fails for good. A connect failure carries no SQLSTATE in
# psycopg2, so these are the English texts of 28P01 (password authentication failed),
# 28000 (other authentication failures, no pg_hba.conf entry, an unknown role or one that
# may not log in), 3D000 (unknown database), 42501 (no CONNECT on the database), libpq's
# own (no password to send, a host name DNS does not know). Anything else, in another
# language included, counts as "for now": the gateway then starts and answers UNAVAILABLE
# until the database lets it in, as it always did.
_FOR_GOOD = re.compile(
    r"authentication failed for user"
    r"|role \".*\" does not exist"
    r"|database \".*\" does not exist"
    r"|no pg_hba\.conf entry"
    r"|is not permitted to log in"
    r"|permission denied for database"
    r"|no password supplied"
    r"|could not translate host name .*: "
    r"(Name or service not known|No address associated with hostname|nodename nor servname)"
)


@dataclass(frozen=True)
class DatabaseLogin:
    """A principal's own database login (the auth policy's ``database_user``)."""

    user: str
    secret_id: str = ""
    iam_auth: bool = False


# For connections that run only the gateway's own SQL with elevated rights (the watchdog, a
# superuser setting up roles): names resolve in pg_catalog alone, so a function a caller
# planted in a schema it owns (public.pg_terminate_backend(integer), a closer match than
# the built-in) is never what runs.
CATALOG_ONLY = "-c search_path=pg_catalog,pg_temp"


def catalog_only(dsn: str) -> str:
    """``dsn`` with a search_path of pg_catalog alone, after any options it had."""
    params = parse_dsn(dsn)
    options = params.get("options", "")
    params["options"] = f"{options} {CATALOG_ONLY}".strip()
    pinned: str = make_dsn(**params)
    return pinned


UNVERIFIED_SSLMODES = ("disable", "allow", "prefer", "require")


def is_local(params: dict[str, str]) -> bool:
    """Whether every host of a parsed DSN is this machine (loopback or a Unix socket)."""
    hosts = params.get("hostaddr") or params.get("host") or ""
    for host in hosts.split(","):
        host = host.strip()
        if host and not host.startswith(("/", "@")) and not is_loopback(host):
            return False
    return True


class RoleDsns:
    """The serving DSN and, when configured, the reader's, the watchdog's and the state
    role's (the owner of the gateway's own tables)."""

    def __init__(self, settings: DatabaseSettings, dsn: str) -> None:
        params = parse_dsn(dsn)
        if settings.db_sslmode:
            params["sslmode"] = settings.db_sslmode
        elif "sslmode" not in params and not is_local(params):
            params["sslmode"] = "verify-full"
        if settings.db_sslrootcert:
            params["sslrootcert"] = settings.db_sslrootcert
        self.sslmode = params.get("sslmode", "prefer")
        self.local = is_local(params)
        self.host = params.get("host") or params.get("hostaddr") or "local socket"
        self.serving = make_dsn(**params)
        self.reader = _as_role(params, settings.db_readonly_user, settings.db_readonly_password)
        self.watchdog = _as_role(params, settings.db_watchdog_user, settings.db_watchdog_password)
        self.state = _as_role(params, settings.db_state_user, settings.db_state_password)
        self._params = params

    def login(self, login: DatabaseLogin) -> str:
        """The DSN of a principal's login: the serving one's, with that user.

        With a secret or an IAM token the password comes at connect time (``LoginPasswords``),
        so the serving password is dropped; without, it is kept (trust, peer, .pgpass).
        """
        changed = dict(self._params, user=login.user)
        if login.secret_id or login.iam_auth:
            changed.pop("password", None)
        dsn: str = make_dsn(**changed)
        return dsn

    def address(self) -> tuple[str, int]:
        """The first host and port, for RDS IAM tokens (which name them)."""
        host = (self._params.get("host") or "localhost").split(",")[0]
        port = (self._params.get("port") or "5432").split(",")[0]
        return host, int(port)

    @property
    def unverified_remote(self) -> bool:
        """A remote database whose server certificate is not checked (or no TLS at all)."""
        return not self.local and self.sslmode in UNVERIFIED_SSLMODES


def _as_role(params: dict[str, str], user: str, password: str) -> str | None:
    if not user:
        return None
    changed = dict(params, user=user)
    changed.pop("password", None)
    if password:
        changed["password"] = password
    return make_dsn(**changed)


def refusal(exc: Exception) -> str | None:
    """The reason a connect failed for good, as one line in the server's (or libpq's) own
    words (``FATAL: role "x" does not exist``); None when a later attempt may succeed.

    libpq's text names the host it tried and never the password.
    """
    for line in str(exc).splitlines():
        if _FOR_GOOD.search(line):
            _, fatal, message = line.partition("FATAL:")
            return f"FATAL: {message.strip()}" if fatal else line.strip()
    return None


def describe_login(dsn: str) -> str:
    """Who logs in where, for a message: user, database, host and port; no password."""
    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or ""
    port = params.get("port") or "5432"
    where = f"{host}:{port}" if host and not host.startswith("/") else "the local socket"
    user = params.get("user") or "(the OS user)"
    dbname = params.get("dbname") or user
    return f'user "{user}", database "{dbname}" on {where}'
