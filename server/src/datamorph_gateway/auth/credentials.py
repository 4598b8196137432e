"""What a credential verifier returns, or raises: shared by every kind of credential.

A verifier takes the credential exactly as the caller sent it and either returns who it
proved the caller to be (``Verified``) or raises ``AuthError``. An ``AuthError`` has a
short machine ``reason`` (for the log line and the failure counter) and a ``message``
that is safe to send back to the caller: neither ever holds the credential itself, nor
anything that would tell a caller which part of a guessed credential was right.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AuthError", "Verified"]


@dataclass(frozen=True)
class Verified:
    """A credential that checked out.

    ``kind`` is ``"api_key"``, ``"jwt"``, ``"aws_iam"`` or ``"tls"``; ``subject`` is what a
    policy matches (a key's hash, a token's ``sub``, a role ARN, a certificate's name);
    ``expires_at`` is a Unix time after which the proof is no longer good (None: never).
    """

    kind: str
    subject: str
    expires_at: float | None = None


class AuthError(Exception):
    """A credential that did not check out."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
