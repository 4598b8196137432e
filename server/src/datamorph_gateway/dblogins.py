"""Where a principal's own database login gets its password (docs/security.md).

An auth policy principal with ``database_user`` gets its own login and pool, so that
PostgreSQL's GRANTs and row-level security decide what that caller sees (``SET ROLE`` is
no boundary when callers send their own SQL: ``RESET ROLE`` undoes it). Its password:

- ``database_secret``: a Secrets Manager secret in RDS's format (``{"username": ...,
  "password": ...}``), read when a connection is opened and kept five minutes, so a
  rotated password is picked up without a restart;
- ``database_iam_auth``: an RDS IAM authentication token (``generate_db_auth_token``,
  signed locally with the gateway's own AWS credentials), made anew ten minutes after the
  last one (tokens are good for fifteen);
- neither: the serving DSN's own password or password file (trust, peer or a shared
  ``.pgpass``).

Nothing of a secret's value ever reaches a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions

from datamorph_gateway import aws
from datamorph_gateway.config import AwsSettings
from datamorph_gateway.db.connect import DatabaseLogin
from datamorph_gateway.errors import Unavailable

__all__ = ["LoginPasswords"]

log = logging.getLogger(__name__)

SECRET_TTL_S = 300.0
IAM_TOKEN_TTL_S = 600.0


class _Cached:
    """A value made by ``make`` and kept for ``ttl_s``; thread-safe."""

    def __init__(self, make: Callable[[], str], ttl_s: float, clock: Callable[[], float]) -> None:
        self._make = make
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._made = 0.0

    def __call__(self) -> str:
        with self._lock:
            now = self._clock()
            if self._value is None or now - self._made >= self._ttl_s:
                self._value = self._make()
                self._made = now
            return self._value


class LoginPasswords:
    """Makes the password source of each principal's database login."""

    def __init__(
        self,
        settings: AwsSettings,
        *,
        session: boto3.session.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._session = session
        self._clock = clock

    def __call__(self, login: DatabaseLogin, host: str, port: int) -> Callable[[], str] | None:
        if login.secret_id:
            return _Cached(lambda: self._secret(login), SECRET_TTL_S, self._clock)
        if login.iam_auth:
            return _Cached(lambda: self._iam_token(login, host, port), IAM_TOKEN_TTL_S, self._clock)
        return None

    def _client(self, service: str, endpoint: str) -> Any:
        return aws.client(self._settings, service, endpoint, session=self._session)

    def _secret(self, login: DatabaseLogin) -> str:
        where = f"the database secret {login.secret_id!r} of database user {login.user!r}"
        client = self._client("secretsmanager", self._settings.secretsmanager_endpoint_url)
        try:
            value = client.get_secret_value(SecretId=login.secret_id)["SecretString"]
            data = json.loads(value)
        except botocore.exceptions.ClientError as exc:
            code = aws.error_code(exc)
            log.error("%s cannot be read (%s)", where, code)
            raise Unavailable(f"{where} cannot be read", reason="DATABASE_LOGIN") from None
        except (botocore.exceptions.BotoCoreError, KeyError, ValueError, TypeError):
            log.error("%s cannot be read or is not RDS's JSON format", where)
            raise Unavailable(f"{where} cannot be read", reason="DATABASE_LOGIN") from None
        password = data.get("password") if isinstance(data, dict) else None
        if not isinstance(password, str) or not password:
            log.error("%s has no password", where)
            raise Unavailable(f"{where} has no password", reason="DATABASE_LOGIN")
        return password

    def _iam_token(self, login: DatabaseLogin, host: str, port: int) -> str:
        client = self._client("rds", "")
        try:
            token: str = client.generate_db_auth_token(
                DBHostname=host, Port=port, DBUsername=login.user, Region=self._settings.aws_region
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            log.error("no RDS IAM token for database user %r: %s", login.user, type(exc).__name__)
            raise Unavailable(
                f"no RDS IAM token for database user {login.user!r}", reason="DATABASE_LOGIN"
            ) from None
        return token
