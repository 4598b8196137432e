"""Configuration from AWS Secrets Manager: the ``secret_loader`` for ``load_settings``.

The secret (``CONFIG_SECRET_ID``) is a JSON object in DataMorph's key format
(``RDS_ENDPOINT``, ``DYNAMODB_TABLE``, …) or the one RDS writes for managed
credentials (``host``, ``username``, ``password``, …); ``config`` maps both.
Every way reading it can fail is one ``ConfigError`` that names the secret and
the likely fix, never a traceback, and never anything from the secret's value.

    settings = load_settings(secret_loader=load_secret)
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions

from datamorph_gateway import aws
from datamorph_gateway.config import AwsSettings
from datamorph_gateway.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = logging.getLogger(__name__)

_HINTS = {
    "ResourceNotFoundException": "does not exist",
    "AccessDeniedException": "cannot be read: the gateway lacks secretsmanager:GetSecretValue",
    "DecryptionFailure": "cannot be decrypted: the gateway lacks kms:Decrypt on its key",
    "InvalidRequestException": "cannot be read now (is it scheduled for deletion?)",
    "UnrecognizedClientException": "cannot be read: the AWS credentials are not valid",
    "InvalidSignatureException": "cannot be read: the AWS credentials are not valid",
    "ExpiredTokenException": "cannot be read: the AWS credentials have expired",
}


def load_secret(
    settings: AwsSettings, *, session: boto3.session.Session | None = None
) -> dict[str, Any]:
    """The secret named by ``settings.config_secret_id``, as a dict of configuration keys."""
    secret_id = settings.config_secret_id
    where = f"secret {secret_id!r} (CONFIG_SECRET_ID) in {settings.aws_region}"
    client: SecretsManagerClient = aws.client(
        settings, "secretsmanager", settings.secretsmanager_endpoint_url, session=session
    )
    try:
        response = client.get_secret_value(SecretId=secret_id)
    except botocore.exceptions.ClientError as exc:
        code = aws.error_code(exc)
        hint = _HINTS.get(code, f"cannot be read ({code})")
        raise ConfigError(f"{where} {hint}") from None
    except botocore.exceptions.NoCredentialsError:
        raise ConfigError(f"{where} cannot be read: no AWS credentials found") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(
            f"{where} cannot be read: Secrets Manager is unreachable ({type(exc).__name__})"
        ) from None
    finally:
        client.close()

    if "SecretString" in response:
        text = response["SecretString"]
    else:
        try:
            text = response.get("SecretBinary", b"").decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{where} is binary, not UTF-8 JSON text") from None
    try:
        data = json.loads(text)
    except ValueError:
        # The decoder's message may quote the value: say only where it failed to parse.
        raise ConfigError(f"{where} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a JSON object of configuration keys")
    log.info("read %d configuration keys from %s", len(data), where)
    return data
