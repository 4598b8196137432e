"""The passwords of the embedded cluster's roles, in a libpq password file.

The cluster is initialised with ``scram-sha-256`` (``AUTH_METHOD``) for every connection and
a random superuser password, which is kept with the other roles' passwords in a libpq
password file next to the data directory (mode 0600). DSNs name that file
(``passfile=``), so no password is ever in a DSN, an environment variable or a log line.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from datamorph_gateway.pg.binaries import fsync_dir

__all__ = ["AUTH_METHOD", "PasswordFile"]

AUTH_METHOD = "scram-sha-256"
_PASSWORD_BYTES = 32


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
        fsync_dir(self.path.parent)


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
