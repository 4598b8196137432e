"""A new cluster: initdb in a staging directory, renamed into place once complete.

The cluster asks every connection for a password (``scram-sha-256``); the bootstrap
superuser's is made and stored in the password file before initdb sets it, so it is
never lost.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import time
from pathlib import Path

from datamorph_gateway.excerpts import tail
from datamorph_gateway.pg.binaries import (
    LOG_TAIL_LINES,
    POSTGRES_BIN_PATH,
    EmbeddedPostgresError,
    fsync_dir,
    give_to,
    run,
)
from datamorph_gateway.pg.passfile import AUTH_METHOD, PasswordFile

__all__ = ["SUPERUSER", "init_cluster"]

_log = logging.getLogger(__name__)

SUPERUSER = "postgres"
_INITDB_TIMEOUT_S = 180
# Written to postgresql.conf once, not passed on the command line, so ALTER SYSTEM can still
# change them; only the address, the socket and the log settings are forced (``server``).
_CONF_DEFAULTS = """
# Added by DataMorph Gateway when it created this cluster.
max_connections = 100
timezone = 'UTC'
log_timezone = 'UTC'
"""


def init_cluster(data_dir: Path, passwords: PasswordFile, user: str | None) -> None:
    """Initialise in a sibling directory and rename, so a crash never leaves half a cluster."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EmbeddedPostgresError(
            f"{data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION); "
            "refusing to initialise over it"
        )
    staging = data_dir.with_name(f".{data_dir.name}.initdb")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(mode=0o700)
    # The superuser's password, for initdb to set: stored first, so it is never lost.
    password = passwords.ensure(SUPERUSER)
    pwfile = data_dir.with_name(f".{data_dir.name}.pwfile")
    try:
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password + "\n")
        if user is not None:
            give_to(staging, user)
            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        started = time.monotonic()
        output = run(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(staging),
                "-U",
                SUPERUSER,
                f"--auth={AUTH_METHOD}",
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
                f"initdb failed for {data_dir} (exit {output.returncode}):\n"
                f"{tail(output.text, LOG_TAIL_LINES)}"
            )
        with (staging / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(_CONF_DEFAULTS)
        if data_dir.exists():
            data_dir.rmdir()
        staging.rename(data_dir)
        fsync_dir(data_dir.parent)
    finally:
        pwfile.unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _log.info("initialised %s in %.1fs", data_dir, time.monotonic() - started)
