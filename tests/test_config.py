"""Settings: defaults < JSON file < secret < environment, typed, and never leaking secrets."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from psycopg2.extensions import parse_dsn

from datamorph_gateway.config import AwsSettings, Settings, load_settings
from datamorph_gateway.errors import ConfigError


def test_defaults_bind_loopback_and_run_embedded() -> None:
    settings = load_settings({})
    assert settings.server.grpc_host == "127.0.0.1"
    assert settings.server.grpc_port == 50051
    assert settings.database.database_dsn() is None


def test_precedence_file_then_secret_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {"GRPC_PORT": 6000, "DB_POOL_MAX": 3, "LOG_LEVEL": "DEBUG", "CONFIG_SECRET_ID": "s"}
        )
    )
    asked: list[str] = []

    def secret(staged: AwsSettings) -> dict[str, Any]:
        asked.append(staged.config_secret_id)
        return {"DB_POOL_MAX": 5, "MAX_SAMPLE_LIMIT": 50, "GRPC_PORT": 7000}

    settings = load_settings(
        {"CONFIG_FILE": str(config), "GRPC_PORT": "8000"}, secret_loader=secret
    )
    assert asked == ["s"]
    assert settings.server.grpc_port == 8000  # environment wins
    assert settings.database.db_pool_max == 5  # the secret beats the file
    assert settings.limits.max_sample_limit == 50
    assert settings.logging.log_level == "DEBUG"  # from the file


def test_secret_is_not_asked_for_when_not_named() -> None:
    def secret(staged: AwsSettings) -> dict[str, Any]:
        raise AssertionError("must not be called")

    load_settings({}, secret_loader=secret)


def test_rds_managed_secret_format() -> None:
    def secret(staged: AwsSettings) -> dict[str, Any]:
        return {
            "host": "db.example.internal",
            "port": 6543,
            "dbname": "etl",
            "username": "gateway",
            "password": "p@ss:w/rd?",
            "engine": "postgres",
        }

    settings = load_settings({"CONFIG_SECRET_ID": "rds!cluster"}, secret_loader=secret)
    params = parse_dsn(settings.database.database_dsn() or "")
    assert params == {
        "host": "db.example.internal",
        "port": "6543",
        "dbname": "etl",
        "user": "gateway",
        "password": "p@ss:w/rd?",
    }


def test_database_url_overrides_rds_keys() -> None:
    settings = load_settings(
        {"RDS_ENDPOINT": "rds.internal", "DATABASE_URL": "postgresql://u@other/db"}
    )
    assert settings.database.database_dsn() == "postgresql://u@other/db"


def test_passwords_are_redacted_and_not_in_repr() -> None:
    settings = load_settings(
        {
            "RDS_ENDPOINT": "h",
            "RDS_PASSWORD": "hunter2",
            "DATABASE_URL": "postgresql://u:hunter2@h/d",
        }
    )
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in json.dumps(settings.redacted())


def test_each_key_is_a_field_of_exactly_one_section() -> None:
    settings = Settings()
    names = [
        spec.name
        for section in dataclasses.fields(settings)
        for spec in dataclasses.fields(getattr(settings, section.name))
    ]
    assert len(names) == len(set(names)) == len(settings.flat())
    assert settings.flat()["db_pool_max"] == settings.database.db_pool_max


def test_flat_names_reach_their_sections() -> None:
    settings = Settings.from_flat(db_pool_max=4, grpc_port=0, rest_port=0)
    assert (settings.database.db_pool_max, settings.server.grpc_port) == (4, 0)
    assert settings.sidecar.rest_port == 0
    assert settings.limits == Settings().limits  # untouched sections keep their defaults
    changed = settings.with_flat(db_pool_min=0, data_dir="elsewhere")
    assert (changed.database.db_pool_min, changed.database.db_pool_max) == (0, 4)
    assert changed.embedded.data_dir == "elsewhere"
    assert settings.database.db_pool_min == 1  # a copy: the original is unchanged
    with pytest.raises(TypeError, match="'db_pool_maxx'"):
        Settings.from_flat(db_pool_maxx=4)
    with pytest.raises(TypeError, match="'database'"):
        settings.with_flat(database=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database.db_pool_max = 5  # type: ignore[misc]


def test_environment_keys_load_into_their_sections() -> None:
    settings = load_settings(
        {"DB_POOL_MAX": "9", "TLS_CERT_FILE": "", "AWS_REGION": "eu-west-1", "REST_PORT": "0"}
    )
    assert settings.database.db_pool_max == 9
    assert settings.aws.aws_region == "eu-west-1"
    assert settings.sidecar.rest_port == 0
    assert settings == Settings.from_flat(db_pool_max=9, aws_region="eu-west-1", rest_port=0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GRPC_PORT": "eighty"}, "GRPC_PORT must be a number"),
        ({"GRPC_PORT": "70000"}, "GRPC_PORT must be between 0 and 65535"),
        ({"DB_POOL_MAX": "0"}, "DB_POOL_MAX must be positive"),
        ({"SEED_DEMO_DATA": "maybe"}, "SEED_DEMO_DATA must be a boolean"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"DEFAULT_SAMPLE_LIMIT": "50", "MAX_SAMPLE_LIMIT": "10"}, "DEFAULT_SAMPLE_LIMIT"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"CONFIG_FILE": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_settings({"CONFIG_FILE": str(bad)})
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"GRPC_PROT": 1}')
    with pytest.raises(ConfigError, match="unknown configuration key 'GRPC_PROT'"):
        load_settings({"CONFIG_FILE": str(unknown)})


def test_every_key_is_documented() -> None:
    """docs/configuration.md stays true: every settings field has a row, and no row is stale."""
    import re

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", doc, flags=re.MULTILINE))
    keys = {name.upper() for name in Settings().flat()}
    assert keys - documented == set()
    assert documented - keys == set()


def test_every_key_is_documented_under_its_section() -> None:
    """Each key's row is under the heading that names its section (``settings.database``)."""
    import re

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    settings = Settings()
    sections = {
        spec.name: section.name
        for section in dataclasses.fields(settings)
        for spec in dataclasses.fields(getattr(settings, section.name))
    }
    heading = ""
    placed: dict[str, str] = {}
    for line in doc.splitlines():
        if line.startswith("## "):
            named = re.search(r"`settings\.([a-z]+)`", line)
            heading = named.group(1) if named else ""
        row = re.match(r"^\| `([A-Z0-9_]+)` \|", line)
        if row:
            placed[row.group(1).lower()] = heading
    assert placed == sections


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("RELATION_CACHE_TTL_S", "-1", "RELATION_CACHE_TTL_S must not be negative"),
        ("SCHEMA_CACHE_MAX_RELATIONS", "-1", "SCHEMA_CACHE_MAX_RELATIONS must not be negative"),
        ("SCHEMA_CACHE_MAX_BYTES", "-1", "SCHEMA_CACHE_MAX_BYTES must not be negative"),
        ("IDEMPOTENCY_STORE", "redis", "IDEMPOTENCY_STORE must be postgres or memory"),
        ("DB_PREPARED_STATEMENTS", "sometimes", "DB_PREPARED_STATEMENTS must be a boolean"),
    ],
)
def test_cache_store_and_prepare_keys_refuse_bad_values(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={key: value})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_POOL_MAX": "4", "DB_POOL_RESERVED_READS": "4"}, "DB_POOL_RESERVED_READS must be"),
        ({"DB_POOL_RESERVED_READS": "-2"}, "DB_POOL_RESERVED_READS must be"),
        ({"MAX_CONCURRENT_QUERIES_PER_CALLER": "0"}, "MAX_CONCURRENT_QUERIES_PER_CALLER must be"),
    ],
)
def test_pool_share_and_caller_limit_refuse_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


@pytest.mark.parametrize(("pool_max", "reserved"), [(16, 4), (8, 2), (3, 1), (2, 1), (1, 0)])
def test_reserved_reads_default_to_a_quarter_of_the_pool(pool_max: int, reserved: int) -> None:
    settings = load_settings({"DB_POOL_MAX": str(pool_max)})
    assert settings.database.pool_reserved_reads() == reserved
    explicit = load_settings({"DB_POOL_MAX": str(pool_max), "DB_POOL_RESERVED_READS": "0"})
    assert explicit.database.pool_reserved_reads() == 0


def test_gateway_processes_is_a_count_or_auto() -> None:
    def count(environ: dict[str, str]) -> int:
        return load_settings(environ).server.gateway_process_count()

    assert count({}) == 1
    assert count({"GATEWAY_PROCESSES": "4"}) == 4
    cpus = len(os.sched_getaffinity(0))
    assert count({"GATEWAY_PROCESSES": "auto"}) == cpus
    assert count({"GATEWAY_PROCESSES": "AUTO"}) == cpus
    for wrong in ("0", "-1", "two", "1.5", "", "²"):
        with pytest.raises(ConfigError, match=r"^GATEWAY_PROCESSES must be a whole number"):
            load_settings({"GATEWAY_PROCESSES": wrong})
    with pytest.raises(ConfigError, match=r"^RESTART_MAX must be 1 or more"):
        load_settings({"RESTART_MAX": "0"})
    with pytest.raises(ConfigError, match=r"^RESTART_WINDOW_S must be positive"):
        load_settings({"RESTART_WINDOW_S": "0"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORKFLOW_MAX_CONCURRENT": "16"}, "WORKFLOW_MAX_CONCURRENT must be less than half"),
        ({"WORKFLOW_MAX_CONCURRENT": "0"}, "WORKFLOW_MAX_CONCURRENT must be positive"),
        ({"LOG_STORE": "s3"}, "LOG_STORE must be one of"),
        ({"ORCHESTRATOR_FUNCTION": "f", "ORCHESTRATOR_HANDLER": "m:f"}, "not both"),
        ({"LAMBDA_ENDPOINT_URL": "localhost:4566"}, "LAMBDA_ENDPOINT_URL must be an http"),
        ({"ORCHESTRATOR_READ_TIMEOUT_S": "-1"}, "ORCHESTRATOR_READ_TIMEOUT_S must be positive"),
    ],
)
def test_workflow_settings_are_checked(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ)


def test_workflow_settings_defaults() -> None:
    s = load_settings({}).workflows
    assert (s.orchestrator_read_timeout_s, s.orchestrator_connect_timeout_s) == (950.0, 10.0)
    assert (s.workflow_max_concurrent, s.log_store) == (8, "auto")
    three = load_settings({"WORKFLOW_MAX_CONCURRENT": "3"})
    assert three.workflows.workflow_max_concurrent == 3
