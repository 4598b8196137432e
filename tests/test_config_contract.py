"""The settings contract, key by key: defaults as documented, how each kind of value is
read, the DSN built from the RDS_* keys, redaction of every secret, and every rule's edge.

Table-driven on purpose: a default, a spelling of a boolean or a bound that changes in
config*.py changes what an operator sees, and one of these rows must then fail
(docs/testing.md, mutation testing).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from datamorph_gateway.config import (
    MIN_RUN_LEASE_S,
    ORIGIN,
    SSLMODES,
    AwsSettings,
    Settings,
    is_loopback,
    load_settings,
    normalize_secret,
)
from datamorph_gateway.config_sections import DatabaseSettings, usable_cpus
from datamorph_gateway.errors import ConfigError

DOC = Path(__file__).parents[1] / "docs" / "configuration.md"
SECRETS = (
    "rds_password",
    "database_url",
    "sidecar_secret",
    "db_readonly_password",
    "db_watchdog_password",
    "db_state_password",
)


def documented_defaults() -> dict[str, str]:
    """Each key's default as docs/configuration.md writes it ("" for —)."""
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", DOC.read_text(), flags=re.MULTILINE)
    out = {}
    for key, cell in rows:
        quoted = re.match(r"`([^`]*)`", cell.strip())
        out[key.lower()] = quoted.group(1) if quoted else ""
    return out


def test_every_default_is_the_documented_one() -> None:
    defaults = Settings().flat()
    documented = documented_defaults()
    assert set(documented) == set(defaults)
    for name, value in defaults.items():
        text = documented[name]
        if isinstance(value, bool):
            assert text == str(value).lower(), name
        elif isinstance(value, (int, float)):
            assert type(value)(text) == value, name
        else:
            assert text == value, name
    assert load_settings({}) == Settings()


# -- reading values -------------------------------------------------------------------------

TRUE = ["1", "true", "yes", "on", "TRUE", "Yes", " on ", "\ttrue\n"]
FALSE = ["0", "false", "no", "off", "", "FALSE", "No", " off "]


@pytest.mark.parametrize("text", TRUE)
def test_booleans_read_true(text: str) -> None:
    assert load_settings({"SEED_DEMO_DATA": "false", "DB_ALLOW_PRIVILEGED": text}).database
    assert load_settings({"DB_ALLOW_PRIVILEGED": text}).database.db_allow_privileged is True


@pytest.mark.parametrize("text", FALSE)
def test_booleans_read_false(text: str) -> None:
    assert load_settings({"SEED_DEMO_DATA": text}).embedded.seed_demo_data is False


@pytest.mark.parametrize("text", ["2", "y", "n", "enabled", "truee", "-1", "none"])
def test_other_booleans_are_refused_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SEED_DEMO_DATA": text})
    assert str(info.value) == "SEED_DEMO_DATA must be a boolean (true/false)"


def file_settings(tmp_path: Path, content: Mapping[str, Any]) -> Settings:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    return load_settings({"CONFIG_FILE": str(path)})


def test_json_values_keep_their_types(tmp_path: Path) -> None:
    settings = file_settings(
        tmp_path,
        {
            "RDS_ENDPOINT": None,  # null: the default stands, and the keys after it are read
            "SEED_DEMO_DATA": False,
            "AUTH_ALLOW_ANONYMOUS": True,
            "DB_POOL_MAX": 7,
            "STATEMENT_TIMEOUT_S": 2.5,
            "RDS_PORT": "6543",
            "LOG_LEVEL": "DEBUG",
            "RDS_DBNAME": 12,
        },
    )
    assert settings.embedded.seed_demo_data is False
    assert settings.auth.auth_allow_anonymous is True
    assert settings.database.db_pool_max == 7
    assert settings.limits.statement_timeout_s == 2.5
    assert settings.database.rds_port == 6543
    assert settings.database.rds_dbname == "12"
    assert settings.database.rds_endpoint == ""


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("DB_POOL_MAX", True, "DB_POOL_MAX must be a number"),
        ("STATEMENT_TIMEOUT_S", False, "STATEMENT_TIMEOUT_S must be a number"),
        ("DB_POOL_MAX", "1.5", "DB_POOL_MAX must be a number"),
        ("DB_POOL_MAX", [1], "DB_POOL_MAX must be a number"),
        ("STATEMENT_TIMEOUT_S", "soon", "STATEMENT_TIMEOUT_S must be a number"),
        ("LOG_LEVEL", {"level": "x"}, "LOG_LEVEL must be a string"),
        ("LOG_LEVEL", ["INFO"], "LOG_LEVEL must be a string"),
        ("SEED_DEMO_DATA", 2, "SEED_DEMO_DATA must be a boolean (true/false)"),
    ],
)
def test_wrong_kinds_of_value_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        file_settings(tmp_path, {key: value})
    assert str(info.value) == message


def test_numbers_from_the_environment() -> None:
    settings = load_settings({"DB_POOL_MAX": " 12 ", "STATEMENT_TIMEOUT_S": "0.25"})
    assert settings.database.db_pool_max == 12
    assert settings.limits.statement_timeout_s == 0.25
    assert type(settings.limits.statement_timeout_s) is float


def test_an_auth_policy_object_becomes_its_json(tmp_path: Path) -> None:
    policy = {"principals": [{"name": "etl", "allow": ["*"]}]}
    settings = file_settings(tmp_path, {"AUTH_POLICY": policy})
    assert json.loads(settings.auth.auth_policy) == policy
    with pytest.raises(ConfigError, match=r"^LOG_FILE must be a string$"):
        file_settings(tmp_path, {"LOG_FILE": {"x": 1}})


def test_keys_are_case_insensitive_and_unknown_ones_ignored_outside_files(tmp_path: Path) -> None:
    assert load_settings({"grpc_port": "7000", "NOT_A_KEY": "x"}).server.grpc_port == 7000
    with pytest.raises(ConfigError) as info:
        file_settings(tmp_path, {"NOT_A_KEY": 1})
    assert str(info.value) == "unknown configuration key 'NOT_A_KEY'"


def test_config_file_messages(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError) as info:
        load_settings({"CONFIG_FILE": str(missing)})
    assert str(info.value) == f"config file {missing} does not exist"
    listed = tmp_path / "list.json"
    listed.write_text("[1]")
    with pytest.raises(ConfigError) as info:
        load_settings({"CONFIG_FILE": str(listed)})
    assert str(info.value) == f"config file {listed} must hold a JSON object"
    with pytest.raises(ConfigError) as info:
        load_settings({"CONFIG_FILE": str(tmp_path)})
    assert str(info.value).startswith(f"config file {tmp_path} is not readable JSON: ")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"LOG_FILE": "caf\xe9"}')
    with pytest.raises(ConfigError, match="is not readable JSON"):
        load_settings({"CONFIG_FILE": str(latin)})


# -- sources and their precedence -----------------------------------------------------------


def test_the_secret_is_read_with_the_aws_section_and_sits_between_file_and_env(
    tmp_path: Path,
) -> None:
    asked: list[AwsSettings] = []

    def secret(aws: AwsSettings) -> Mapping[str, Any]:
        asked.append(aws)
        return {"DB_POOL_MAX": 5, "LOG_LEVEL": "ERROR", "password": "from-secret"}

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"CONFIG_SECRET_ID": "named", "LOG_LEVEL": "DEBUG"}))
    settings = load_settings(
        {"CONFIG_FILE": str(path), "AWS_REGION": "eu-west-3", "DB_POOL_MAX": "6"},
        secret_loader=secret,
    )
    assert [(a.config_secret_id, a.aws_region) for a in asked] == [("named", "eu-west-3")]
    assert settings.logging.log_level == "ERROR"  # the secret over the file
    assert settings.database.db_pool_max == 6  # the environment over the secret
    assert settings.database.rds_password == "from-secret"
    assert load_settings({}, secret_loader=secret) == Settings()
    assert len(asked) == 1  # no secret named: never asked


def test_normalize_secret_reads_both_formats() -> None:
    rds = {"host": "h", "port": 5433, "dbname": "d", "username": "u", "password": "p"}
    assert normalize_secret(rds) == {
        "RDS_ENDPOINT": "h",
        "RDS_PORT": 5433,
        "RDS_DBNAME": "d",
        "RDS_USERNAME": "u",
        "RDS_PASSWORD": "p",
    }
    assert normalize_secret({"db_pool_max": 3, "engine": "postgres", "Log_Level": "x"}) == {
        "DB_POOL_MAX": 3,
        "LOG_LEVEL": "x",
    }


# -- the DSN from the RDS_* keys ------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "dsn"),
    [
        ({}, None),
        ({"rds_username": "u", "rds_password": "p"}, None),  # no endpoint: embedded
        ({"rds_endpoint": "db.example.com"}, "postgresql://db.example.com:5432/postgres"),
        (
            {"rds_endpoint": "h", "rds_username": "u", "rds_password": "p", "rds_port": 6000},
            "postgresql://u:p@h:6000/postgres",
        ),
        ({"rds_endpoint": "h", "rds_username": "u"}, "postgresql://u@h:5432/postgres"),
        ({"rds_endpoint": "h", "rds_password": "p"}, "postgresql://:p@h:5432/postgres"),
        (
            {
                "rds_endpoint": "h",
                "rds_username": "us@r:x",
                "rds_password": "p@ss:w/rd %?#",
                "rds_dbname": "my db/x",
            },
            "postgresql://us%40r%3Ax:p%40ss%3Aw%2Frd%20%25%3F%23@h:5432/my%20db%2Fx",
        ),
        ({"rds_endpoint": "::1"}, "postgresql://[::1]:5432/postgres"),
        ({"rds_endpoint": "fd00::5", "rds_port": 5433}, "postgresql://[fd00::5]:5433/postgres"),
        ({"rds_endpoint": "[::1]"}, "postgresql://[::1]:5432/postgres"),
        ({"rds_endpoint": "10.0.0.5"}, "postgresql://10.0.0.5:5432/postgres"),
        (
            {"database_url": "postgresql://x@y/z", "rds_endpoint": "h", "rds_password": "p"},
            "postgresql://x@y/z",
        ),
    ],
)
def test_dsn_from_the_rds_keys(keys: dict[str, Any], dsn: str | None) -> None:
    assert Settings.from_flat(**keys).database.database_dsn() == dsn


# -- secrets never shown --------------------------------------------------------------------


@pytest.mark.parametrize("name", SECRETS)
def test_each_secret_is_redacted_in_every_view(name: str) -> None:
    others = {"db_readonly_user": "ro", "db_watchdog_user": "wd", "db_state_user": "st"}
    settings = Settings.from_flat(**{name: "hunter2", **others})
    redacted = settings.redacted()
    assert redacted[name] == "***"
    assert {k: v for k, v in redacted.items() if k != name} == {
        k: v for k, v in settings.flat().items() if k != name
    }
    section = next(s for s in vars(settings).values() if name in vars(s))
    for view in (repr(settings), str(settings), repr(section), json.dumps(redacted)):
        assert "hunter2" not in view


def test_unset_secrets_stay_empty_in_the_redacted_view() -> None:
    redacted = Settings().redacted()
    assert {name: redacted[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    assert redacted == Settings().flat()


# -- derived values -------------------------------------------------------------------------


def test_derived_values() -> None:
    assert Settings().drain_period_s() == 10.0
    assert Settings.from_flat(envoy_health_check_interval_s=3).drain_period_s() == 6
    assert Settings.from_flat(drain_s=0.0).drain_period_s() == 0.0
    assert Settings.from_flat(drain_s=2.5).drain_period_s() == 2.5
    cors = Settings.from_flat(cors_allowed_origins=" https://a.example , ,http://b:8080,")
    assert cors.sidecar.cors_origins() == ("https://a.example", "http://b:8080")
    assert Settings().sidecar.cors_origins() == ()
    assert Settings.from_flat(gateway_processes=" Auto ").server.gateway_process_count() == (
        usable_cpus()
    )
    assert Settings.from_flat(gateway_processes="3").server.gateway_process_count() == 3
    assert usable_cpus() >= 1


@pytest.mark.parametrize(
    ("pool_max", "reserved", "expected"),
    [(16, -1, 4), (5, -1, 2), (4, -1, 1), (2, -1, 1), (1, -1, 0), (16, 0, 0), (16, 15, 15)],
)
def test_reserved_reads(pool_max: int, reserved: int, expected: int) -> None:
    db = DatabaseSettings(db_pool_max=pool_max, db_pool_reserved_reads=reserved)
    assert db.pool_reserved_reads() == expected


# -- the rules, at their edges --------------------------------------------------------------

POSITIVE = (
    "GRPC_MAX_WORKERS",
    "DB_POOL_MAX",
    "DB_CONNECT_ATTEMPTS",
    "MAX_TABLE_NAMES",
    "DEFAULT_SAMPLE_LIMIT",
    "MAX_SAMPLE_LIMIT",
    "MAX_QUERY_BYTES",
    "MAX_RESULT_ROWS",
    "MAX_RESULT_BYTES",
    "MAX_CONCURRENT_QUERIES_PER_CALLER",
    "STATEMENT_TIMEOUT_S",
    "DB_POOL_TIMEOUT_S",
    "DB_CONNECT_TIMEOUT_S",
    "HEALTH_CHECK_TIMEOUT_S",
    "HEALTH_POLL_INTERVAL_S",
    "STREAM_BATCH_ROWS",
    "MAX_STREAM_BATCH_ROWS",
    "STREAM_TIMEOUT_S",
    "ORCHESTRATOR_READ_TIMEOUT_S",
    "ORCHESTRATOR_CONNECT_TIMEOUT_S",
    "WORKFLOW_MAX_CONCURRENT",
    "IDEMPOTENCY_TTL_S",
    "IDEMPOTENCY_MAX_KEYS",
    "LOG_POLL_INTERVAL_S",
    "LOG_WATCH_MAX_S",
    "AWS_TIMEOUT_S",
)


@pytest.mark.parametrize("key", POSITIVE)
def test_positive_keys_refuse_zero(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({key: "0"})
    assert str(info.value) == f"{key} must be positive"


# Values at the edge of each rule, which load.
ACCEPTED: list[dict[str, str]] = [
    {"DB_CONNECT_ATTEMPTS": "1", "MAX_TABLE_NAMES": "1", "MAX_QUERY_BYTES": "1"},
    {"STATEMENT_TIMEOUT_S": "0.001", "AWS_TIMEOUT_S": "0.5", "LOG_POLL_INTERVAL_S": "0.01"},
    {"DEFAULT_SAMPLE_LIMIT": "1", "MAX_SAMPLE_LIMIT": "1"},
    {"STREAM_BATCH_ROWS": "1", "MAX_STREAM_BATCH_ROWS": "1"},
    {"MAX_CONCURRENT_QUERIES_PER_CALLER": "1", "MAX_RESULT_ROWS": "1", "MAX_RESULT_BYTES": "1"},
    {"LOG_RETENTION_DAYS": "0", "RELATION_CACHE_TTL_S": "0"},
    {"IDEMPOTENCY_STORE": "memory"},
    {"IDEMPOTENCY_STORE": "postgres"},
    {"RUN_LEASE_S": "0"},
    {"RUN_LEASE_S": "1"},
    {"GRPC_PORT": "0"},
    {"GRPC_PORT": "65535"},
    {"DB_POOL_MIN": "0"},
    {"DB_POOL_MIN": "4", "DB_POOL_MAX": "4"},
    {"DB_POOL_MAX": "1"},
    {"DB_POOL_MAX": "4", "DB_POOL_RESERVED_READS": "3"},
    {"LOG_LEVEL": "debug"},
    {"LOG_LEVEL": "WARNING"},
    {"LOG_LEVEL": "ERROR"},
    {"LOG_LEVEL": "CRITICAL"},
    {"WORKFLOW_MAX_CONCURRENT": "15"},
    {"WORKFLOW_MAX_CONCURRENT": "1", "GRPC_MAX_WORKERS": "3"},
    {"LOG_STORE": "postgres"},
    {"LOG_STORE": "dynamodb"},
    {"ORCHESTRATOR_FUNCTION": "f"},
    {"ORCHESTRATOR_HANDLER": "m:f"},
    {"AWS_ENDPOINT_URL": "http://localhost:4566"},
    {"DYNAMODB_ENDPOINT_URL": "https://d.example"},
    {"DB_SSLMODE": "verify-full"},
    {"DB_SSLMODE": "disable"},
    {"DB_READONLY_USER": "ro", "DB_READONLY_PASSWORD": "p"},
    {"DB_WATCHDOG_USER": "wd", "DB_WATCHDOG_PASSWORD": "p"},
    {"DB_STATE_USER": "st", "DB_STATE_PASSWORD": "p"},
    {"DRAIN_S": "-1"},
    {"DRAIN_S": "0"},
    {"ENVOY_ADMIN_PORT": "-1"},
    {"ENVOY_ADMIN_PORT": "0"},
    {"ENVOY_ADMIN_PORT": "65535"},
    {"ENVOY_ADMIN_HOST": "localhost"},
    {"ENVOY_ADMIN_HOST": "::1"},
    {"ENVOY_ADMIN_HOST": "127.0.0.2"},
    {"CORS_ALLOWED_ORIGINS": "https://app.example.com,http://[::1]:8080,http://x:1"},
    {"GATEWAY_PROCESSES": " 2 "},
    {"GATEWAY_PROCESSES": "auto"},
    {"RESTART_MAX": "1", "RESTART_WINDOW_S": "0.5"},
    {"ENVOY_HEALTH_CHECK_INTERVAL_S": "0.1"},
    {"SCHEMA_CACHE_MAX_RELATIONS": "0", "SCHEMA_CACHE_MAX_BYTES": "0"},  # the cache off
    {"LOG_FORMAT": "json"},
    {"LOG_FORMAT": "text"},
    {"METRICS_PORT": "0"},
    {"METRICS_PORT": "65535"},
    {"METRICS_EMF_INTERVAL_S": "0.5"},
    {"GATEWAY_PROCESS_INDEX": "0"},
]


@pytest.mark.parametrize("environ", ACCEPTED)
def test_values_at_the_edge_of_each_rule_load(environ: dict[str, str]) -> None:
    settings = load_settings(environ)
    flat = settings.flat()
    for key, text in environ.items():
        value = flat[key.lower()]
        if isinstance(value, (int, float)):
            assert value == type(value)(text)
        else:
            assert value == text


REFUSED: list[tuple[dict[str, str], str]] = [
    (
        {"LOG_RETENTION_DAYS": "-0.5"},
        "LOG_RETENTION_DAYS must not be negative (0 keeps every run)",
    ),
    ({"IDEMPOTENCY_STORE": "Memory"}, "IDEMPOTENCY_STORE must be postgres or memory"),
    ({"RUN_LEASE_S": "0.99"}, "RUN_LEASE_S must be 0 (no leases) or at least 1 seconds"),
    ({"RUN_LEASE_S": "-1"}, "RUN_LEASE_S must be 0 (no leases) or at least 1 seconds"),
    ({"RUN_LEASE_S": "nan"}, "RUN_LEASE_S must be 0 (no leases) or at least 1 seconds"),
    (
        {"RELATION_CACHE_TTL_S": "-0.1"},
        "RELATION_CACHE_TTL_S must not be negative (0 turns the cache off)",
    ),
    ({"GRPC_PORT": "-1"}, "GRPC_PORT must be between 0 and 65535"),
    ({"GRPC_PORT": "65536"}, "GRPC_PORT must be between 0 and 65535"),
    ({"DB_POOL_MIN": "-1"}, "DB_POOL_MIN must be between 0 and DB_POOL_MAX"),
    ({"DB_POOL_MIN": "5", "DB_POOL_MAX": "4"}, "DB_POOL_MIN must be between 0 and DB_POOL_MAX"),
    (
        {"DB_POOL_MAX": "4", "DB_POOL_RESERVED_READS": "4"},
        "DB_POOL_RESERVED_READS must be between 0 and DB_POOL_MAX - 1 (or -1 for a quarter of "
        "DB_POOL_MAX): caller SQL needs at least one connection",
    ),
    ({"DB_POOL_RESERVED_READS": "-2"}, "DB_POOL_RESERVED_READS must be between 0 and"),
    (
        {"STREAM_BATCH_ROWS": "11", "MAX_STREAM_BATCH_ROWS": "10"},
        "STREAM_BATCH_ROWS must not exceed MAX_STREAM_BATCH_ROWS",
    ),
    (
        {"DEFAULT_SAMPLE_LIMIT": "11", "MAX_SAMPLE_LIMIT": "10"},
        "DEFAULT_SAMPLE_LIMIT must not exceed MAX_SAMPLE_LIMIT",
    ),
    ({"LOG_LEVEL": "TRACE"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    (
        {"WORKFLOW_MAX_CONCURRENT": "16"},
        "WORKFLOW_MAX_CONCURRENT must be less than half of GRPC_MAX_WORKERS: up to twice "
        "as many StartWorkflow calls may wait, and other RPCs need threads too",
    ),
    ({"LOG_STORE": "Auto"}, "LOG_STORE must be one of auto, postgres, dynamodb"),
    (
        {"ORCHESTRATOR_FUNCTION": "f", "ORCHESTRATOR_HANDLER": "m:f"},
        "set ORCHESTRATOR_FUNCTION (an AWS Lambda) or ORCHESTRATOR_HANDLER "
        "(a local module:function), not both",
    ),
    ({"AWS_ENDPOINT_URL": "ftp://x"}, "AWS_ENDPOINT_URL must be an http:// or https:// URL"),
    ({"LAMBDA_ENDPOINT_URL": "x"}, "LAMBDA_ENDPOINT_URL must be an http:// or https:// URL"),
    ({"DYNAMODB_ENDPOINT_URL": "x"}, "DYNAMODB_ENDPOINT_URL must be an http:// or https:// URL"),
    (
        {"SECRETSMANAGER_ENDPOINT_URL": "localhost"},
        "SECRETSMANAGER_ENDPOINT_URL must be an http:// or https:// URL",
    ),
    (
        {"DB_SSLMODE": "on"},
        "DB_SSLMODE must be one of disable, allow, prefer, require, verify-ca, verify-full "
        "(or empty)",
    ),
    (
        {"DB_READONLY_PASSWORD": "p"},
        "DB_READONLY_PASSWORD is set but DB_READONLY_USER is not",
    ),
    (
        {"DB_WATCHDOG_PASSWORD": "p"},
        "DB_WATCHDOG_PASSWORD is set but DB_WATCHDOG_USER is not",
    ),
    (
        {"DB_STATE_PASSWORD": "p"},
        "DB_STATE_PASSWORD is set but DB_STATE_USER is not",
    ),
    (
        {"TLS_CERT_FILE": "/c"},
        "TLS_CERT_FILE and TLS_KEY_FILE must be set together (or neither)",
    ),
    (
        {"TLS_KEY_FILE": "/k"},
        "TLS_CERT_FILE and TLS_KEY_FILE must be set together (or neither)",
    ),
    (
        {"TLS_CLIENT_CA_FILE": "/ca"},
        "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE (mTLS is TLS)",
    ),
    (
        {"TLS_CERT_FILE": "/nonexistent/c", "TLS_KEY_FILE": "/nonexistent/k"},
        "TLS_CERT_FILE /nonexistent/c is not readable: No such file or directory",
    ),
    (
        {"DRAIN_S": "-0.5"},
        "DRAIN_S must be 0 or more (or -1 for two health-check intervals)",
    ),
    ({"DRAIN_S": "-2"}, "DRAIN_S must be 0 or more (or -1 for two health-check intervals)"),
    (
        {"ENVOY_HEALTH_CHECK_INTERVAL_S": "0"},
        "ENVOY_HEALTH_CHECK_INTERVAL_S must be positive",
    ),
    (
        {"ENVOY_ADMIN_PORT": "-2"},
        "ENVOY_ADMIN_PORT must be between 0 and 65535, or -1 (the default: Envoy's admin "
        "API on a Unix socket in DATA_DIR)",
    ),
    ({"ENVOY_ADMIN_PORT": "65536"}, "ENVOY_ADMIN_PORT must be between 0 and 65535, or -1"),
    (
        {"ENVOY_ADMIN_HOST": "0.0.0.0"},
        "ENVOY_ADMIN_HOST must be a loopback address, got '0.0.0.0': "
        "Envoy's admin API can reconfigure and stop it",
    ),
    (
        {"CORS_ALLOWED_ORIGINS": "https://a.example/path"},
        "CORS_ALLOWED_ORIGINS must list exact origins, scheme://host[:port] (no path, "
        "no wildcard), separated by commas; got 'https://a.example/path'",
    ),
    (
        {"GATEWAY_PROCESSES": "0"},
        "GATEWAY_PROCESSES must be a whole number of processes (1 or more) or auto (one "
        "per CPU), got '0'",
    ),
    (
        {"RESTART_MAX": "0"},
        "RESTART_MAX must be 1 or more (1: a child that exits stops the stack)",
    ),
    ({"RESTART_WINDOW_S": "0"}, "RESTART_WINDOW_S must be positive"),
    (
        {"SCHEMA_CACHE_MAX_RELATIONS": "-1"},
        "SCHEMA_CACHE_MAX_RELATIONS must not be negative (0 turns the cache off)",
    ),
    ({"SCHEMA_CACHE_MAX_BYTES": "-1"}, "SCHEMA_CACHE_MAX_BYTES must not be negative"),
    ({"LOG_FORMAT": "JSON"}, "LOG_FORMAT must be text or json, got 'JSON'"),
    ({"METRICS_PORT": "-1"}, "METRICS_PORT must be between 1 and 65535, or 0 (no metrics)"),
    ({"METRICS_PORT": "65536"}, "METRICS_PORT must be between 1 and 65535, or 0 (no metrics)"),
    ({"METRICS_PORT": "50051", "GRPC_PORT": "50051"}, "METRICS_PORT and GRPC_PORT are both 50051"),
    ({"METRICS_EMF_INTERVAL_S": "0"}, "METRICS_EMF_INTERVAL_S must be positive"),
    ({"METRICS_EMF_NAMESPACE": " "}, "METRICS_EMF_NAMESPACE must not be empty"),
    ({"GATEWAY_PROCESS_INDEX": "-1"}, "GATEWAY_PROCESS_INDEX must be 0 or more"),
]


@pytest.mark.parametrize(("environ", "message"), REFUSED)
def test_values_past_the_edge_of_each_rule_are_refused(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ)
    assert str(info.value).startswith(message)


def test_tls_files_that_exist_load(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    settings = load_settings(
        {
            "TLS_CERT_FILE": str(tmp_path / "cert.pem"),
            "TLS_KEY_FILE": str(tmp_path / "key.pem"),
            "TLS_CLIENT_CA_FILE": str(tmp_path / "ca.pem"),
        }
    )
    assert settings.tls.tls_client_ca_file == str(tmp_path / "ca.pem")
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "TLS_CERT_FILE": str(tmp_path / "cert.pem"),
                "TLS_KEY_FILE": str(tmp_path / "key.pem"),
                "TLS_CLIENT_CA_FILE": str(tmp_path / "none.pem"),
            }
        )
    assert str(info.value) == (
        f"TLS_CLIENT_CA_FILE {tmp_path / 'none.pem'} is not readable: No such file or directory"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("::", False),
        ("example.com", False),
        ("LOCALHOST.", False),
        ("X::1", False),  # only brackets are taken off
        ("[127.0.0.1]", True),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://app.example.com", True),
        ("http://localhost:8080", True),
        ("http://[::1]:99999", True),
        ("https://a-b.c", True),
        ("ftp://x", False),
        ("https://x/", False),
        ("https://*.example.com", False),
        ("https://x:123456", False),
        (" https://x", False),
    ],
)
def test_origin_pattern(origin: str, ok: bool) -> None:
    assert bool(ORIGIN.match(origin)) is ok


def test_constants() -> None:
    assert MIN_RUN_LEASE_S == 1.0
    assert SSLMODES == ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def test_settings_and_every_section_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database = DatabaseSettings()  # type: ignore[misc]
    for spec in dataclasses.fields(settings):
        section = getattr(settings, spec.name)
        first = dataclasses.fields(section)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, first, getattr(section, first))
        assert hash(section) == hash(type(section)())


def test_an_unknown_flat_name_is_named() -> None:
    with pytest.raises(TypeError) as info:
        Settings().with_flat(nope=1)
    assert str(info.value) == "Settings has no field 'nope' in any section"


def test_usable_cpus_is_this_threads_affinity() -> None:
    """Narrowed (as taskset or a container narrows it), the count follows."""
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert usable_cpus() == len(allowed)


@pytest.mark.parametrize(("counted", "expected"), [(3, 3), (None, 1)])
def test_usable_cpus_without_affinity(
    monkeypatch: pytest.MonkeyPatch, counted: int | None, expected: int
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: counted)
    assert usable_cpus() == expected
