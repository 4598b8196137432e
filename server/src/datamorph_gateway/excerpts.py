"""Short excerpts of long text for error messages and log lines.

A message quotes what a library or a child process said, but only what a reader needs:
an exception's first line (libpq's run on with DETAIL and HINT lines, which may quote a
caller's values), or a log's last lines (where a failed start says why).
"""

from __future__ import annotations

__all__ = ["first_line", "tail"]


def first_line(exc: BaseException | None) -> str:
    """The first line of ``exc``'s message, or its class name when it has none."""
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


def tail(text: str, lines: int) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
