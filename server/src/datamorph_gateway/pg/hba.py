"""pg_hba.conf: a cluster made by an earlier version, which trusted every local login, is
moved to ``scram-sha-256`` the first time it starts here, with its data untouched.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2

from datamorph_gateway.pg.binaries import EmbeddedPostgresError
from datamorph_gateway.pg.initdb import SUPERUSER
from datamorph_gateway.pg.passfile import AUTH_METHOD, PasswordFile

if TYPE_CHECKING:
    from datamorph_gateway.pg.server import EmbeddedPostgres

__all__ = ["check_password_file", "require_passwords"]

_log = logging.getLogger(__name__)


def check_password_file(data_dir: Path, passwords: PasswordFile) -> None:
    """A cluster that asks for passwords needs the file that holds them."""
    if _trusting_lines(data_dir) or passwords.get(SUPERUSER) is not None:
        return
    raise EmbeddedPostgresError(
        f"{data_dir} asks for passwords but {passwords.path} (which holds them) "
        f"is missing or has no entry for {SUPERUSER!r}: restore that file, or remove "
        f"{data_dir} to start over with an empty cluster"
    )


def _hba_path(data_dir: Path) -> Path:
    return data_dir / "pg_hba.conf"


def _trusting_lines(data_dir: Path) -> list[int]:
    """Indexes of pg_hba.conf rules that let anyone in without a password."""
    lines = _hba_path(data_dir).read_text(encoding="utf-8").splitlines()
    return [
        index for index, line in enumerate(lines) if line.split("#", 1)[0].split()[-1:] == ["trust"]
    ]


def require_passwords(server: EmbeddedPostgres, user: str | None, timeout_s: float) -> None:
    """Move a cluster made by an earlier version (trust for every local login) to SCRAM.

    The superuser gets its password first (stored before it is set, so a crash in
    between is repaired by the next start), then pg_hba.conf asks for it and the
    server reloads it. Nothing else changes: data, roles and settings stay as they were.
    """
    trusting = _trusting_lines(server.data_dir)
    if not trusting:
        return
    conn = psycopg2.connect(server.dsn, connect_timeout=5)
    try:
        conn.autocommit = True
        server.set_password(conn, SUPERUSER)
        hba = _hba_path(server.data_dir)
        lines = hba.read_text(encoding="utf-8").splitlines()
        for index in trusting:
            rule, hash_, comment = lines[index].partition("#")
            method = rule.split()[-1]
            rule = re.sub(rf"{method}(\s*)$", rf"{AUTH_METHOD}\1", rule.rstrip())
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
    deadline = time.monotonic() + timeout_s
    while not _refuses_without_password(server):
        if time.monotonic() >= deadline:
            raise EmbeddedPostgresError(f"{_hba_path(server.data_dir)} was not reloaded in time")
        time.sleep(0.05)
    _log.warning(
        "the embedded cluster in %s trusted every local login; it now asks for passwords "
        "(scram-sha-256), kept in %s",
        server.data_dir,
        server.passwords.path,
    )


def _refuses_without_password(server: EmbeddedPostgres) -> bool:
    host = f"[{server.host}]" if ":" in server.host else server.host
    try:
        psycopg2.connect(
            f"postgresql://{SUPERUSER}@{host}:{server.port}/postgres",
            connect_timeout=5,
            passfile=str(server.data_dir / "no-password-file"),
            password="",
        ).close()
    except psycopg2.OperationalError as exc:
        return "password" in str(exc)
    return False
