"""Settings from AWS Secrets Manager (moto server): both secret formats, precedence, failures."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from datamorph_gateway.config import load_settings
from datamorph_gateway.config_secret import load_secret
from datamorph_gateway.errors import ConfigError

PASSWORD = "s3cr3t-p@ss/word"


@pytest.fixture
def secrets_client(moto_url: str, aws_session: boto3.session.Session) -> Iterator[Any]:
    client = aws_session.client("secretsmanager", endpoint_url=moto_url)
    yield client
    client.close()


@pytest.fixture
def make_secret(secrets_client: Any) -> Iterator[Callable[..., str]]:
    """Create secrets with unique names; all are deleted at the end of the test."""
    names: list[str] = []

    def make(value: Any = None, *, binary: bytes | None = None) -> str:
        name = f"datamorph/config-{uuid.uuid4().hex[:8]}"
        if binary is not None:
            secrets_client.create_secret(Name=name, SecretBinary=binary)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            secrets_client.create_secret(Name=name, SecretString=text)
        names.append(name)
        return name

    yield make
    for name in names:
        secrets_client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def env(moto_url: str) -> dict[str, str]:
    return {"SECRETSMANAGER_ENDPOINT_URL": moto_url, "AWS_REGION": "us-east-1"}


@pytest.fixture
def loader(aws_session: boto3.session.Session) -> Callable[..., Any]:
    return functools.partial(load_secret, session=aws_session)


def test_datamorph_format(
    make_secret: Callable[..., str], env: dict[str, str], loader: Callable[..., Any]
) -> None:
    name = make_secret(
        {
            "RDS_ENDPOINT": "db.example.internal",
            "RDS_PORT": "6543",
            "RDS_DBNAME": "warehouse",
            "RDS_USERNAME": "etl",
            "RDS_PASSWORD": PASSWORD,
            "DYNAMODB_TABLE": "dm_logs",
            "DYNAMODB_PARTITION_KEY": "id",
            "ORCHESTRATOR_FUNCTION": "datamorph-orchestrator",
            "SPECS_PATH": "s3://bucket/specs",  # DataMorph's own keys the gateway has no use for
        }
    )
    settings = load_settings({**env, "CONFIG_SECRET_ID": name}, secret_loader=loader)
    db = settings.database
    assert (db.rds_endpoint, db.rds_port, db.rds_dbname) == (
        "db.example.internal",
        6543,
        "warehouse",
    )
    assert (db.rds_username, db.rds_password) == ("etl", PASSWORD)
    assert (settings.aws.dynamodb_table, settings.aws.dynamodb_partition_key) == ("dm_logs", "id")
    assert settings.workflows.orchestrator_function == "datamorph-orchestrator"
    assert PASSWORD not in repr(settings)


def test_rds_managed_format(
    make_secret: Callable[..., str], env: dict[str, str], loader: Callable[..., Any]
) -> None:
    name = make_secret(
        {
            "engine": "postgres",
            "host": "rds.example.internal",
            "port": 5432,
            "dbname": "app",
            "username": "admin",
            "password": PASSWORD,
        }
    )
    settings = load_settings({**env, "CONFIG_SECRET_ID": name}, secret_loader=loader)
    assert settings.database.database_dsn() == (
        "postgresql://admin:s3cr3t-p%40ss%2Fword@rds.example.internal:5432/app"
    )


def test_environment_wins_over_the_secret(
    make_secret: Callable[..., str], env: dict[str, str], loader: Callable[..., Any]
) -> None:
    name = make_secret({"RDS_ENDPOINT": "from-secret", "DYNAMODB_TABLE": "from_secret"})
    settings = load_settings(
        {**env, "CONFIG_SECRET_ID": name, "DYNAMODB_TABLE": "from_env"}, secret_loader=loader
    )
    assert (settings.database.rds_endpoint, settings.aws.dynamodb_table) == (
        "from-secret",
        "from_env",
    )


def test_binary_secret(
    make_secret: Callable[..., str], env: dict[str, str], loader: Callable[..., Any]
) -> None:
    name = make_secret(binary=json.dumps({"RDS_ENDPOINT": "bin.example"}).encode())
    settings = load_settings({**env, "CONFIG_SECRET_ID": name}, secret_loader=loader)
    assert settings.database.rds_endpoint == "bin.example"


def test_missing_secret_is_one_clear_error(env: dict[str, str], loader: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({**env, "CONFIG_SECRET_ID": "datamorph/absent"}, secret_loader=loader)
    message = str(err.value)
    assert message == ("secret 'datamorph/absent' (CONFIG_SECRET_ID) in us-east-1 does not exist")
    # One error, not a chain: the start-up message is all an operator sees.
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"RDS_PASSWORD={PASSWORD}", "is not valid JSON"),
        (json.dumps([PASSWORD]), "must hold a JSON object"),
    ],
)
def test_unreadable_secret_never_shows_its_value(
    make_secret: Callable[..., str],
    env: dict[str, str],
    loader: Callable[..., Any],
    value: str,
    expected: str,
) -> None:
    name = make_secret(value)
    with pytest.raises(ConfigError, match=expected) as err:
        load_settings({**env, "CONFIG_SECRET_ID": name}, secret_loader=loader)
    assert PASSWORD not in str(err.value)
    assert err.value.__cause__ is None


def test_unreachable_secrets_manager(loader: Callable[..., Any]) -> None:
    environ = {
        "CONFIG_SECRET_ID": "datamorph/config",
        "SECRETSMANAGER_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: refused at once
        "AWS_TIMEOUT_S": "2",
    }
    with pytest.raises(ConfigError, match="Secrets Manager is unreachable"):
        load_settings(environ, secret_loader=loader)


def test_no_secret_named_means_no_call(loader: Callable[..., Any]) -> None:
    def refuse(settings: object) -> dict[str, str]:
        raise AssertionError("the loader must not be called")

    assert load_settings({}, secret_loader=refuse).database.rds_endpoint == ""
