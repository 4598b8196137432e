"""The session formats the decoders rely on, pinned as libpq start-up options.

The decoders read PostgreSQL's text output, so they need its formats fixed. Sent as
start-up options (not ``SET``), these are the session defaults that ``RESET ALL`` and
``DISCARD ALL`` go back to after user SQL changed them.
"""

from __future__ import annotations

import re

__all__ = ["SESSION_OPTIONS", "startup_options"]

SESSION_OPTIONS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}

_OPTION_SPECIAL = re.compile(r"([\\\s])")


def _escape_option(text: str) -> str:
    return _OPTION_SPECIAL.sub(r"\\\1", text)


def startup_options(base: str = "") -> str:
    """The libpq ``options`` value that pins ``SESSION_OPTIONS`` for a connection.

    ``base`` is any ``options`` value the DSN already had; it goes first so that ours,
    applied later by the server, win. libpq splits on unescaped whitespace, hence the
    backslashes.
    """
    ours = " ".join(
        f"-c {_escape_option(k)}={_escape_option(v)}" for k, v in SESSION_OPTIONS.items()
    )
    return f"{base} {ours}" if base.strip() else ours
