"""The rules a ``Settings`` must satisfy, checked once when ``load_settings`` builds it.

Most rules concern one section (``_validate_tls`` gets the TLS section); a rule that
relates keys of two sections (WORKFLOW_MAX_CONCURRENT and GRPC_MAX_WORKERS) reads the root.

A value that breaks one stops the start with a ``ConfigError`` that names the key and what
it must be, before anything listens or connects. The address rules are shared with the
modules that apply them at run time (``is_loopback``, ``ORIGIN``).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

from datamorph_gateway.errors import ConfigError

if TYPE_CHECKING:
    from datamorph_gateway.config import Settings
    from datamorph_gateway.config_sections import (
        DatabaseSettings,
        ServerSettings,
        SidecarSettings,
        TlsSettings,
    )

# Leases are renewed every RUN_LEASE_S / 4: shorter than this, renewals would crowd the database.
MIN_RUN_LEASE_S = 1.0


def validate(s: Settings) -> None:
    """Raise a ConfigError, naming the key, for the first setting that breaks a rule."""
    positive = (
        "grpc_max_workers",
        "db_pool_max",
        "db_connect_attempts",
        "max_table_names",
        "default_sample_limit",
        "max_sample_limit",
        "max_query_bytes",
        "max_result_rows",
        "max_result_bytes",
        "max_concurrent_queries_per_caller",
        "statement_timeout_s",
        "db_pool_timeout_s",
        "db_connect_timeout_s",
        "health_check_timeout_s",
        "health_poll_interval_s",
        "stream_batch_rows",
        "max_stream_batch_rows",
        "stream_timeout_s",
        "orchestrator_read_timeout_s",
        "orchestrator_connect_timeout_s",
        "workflow_max_concurrent",
        "idempotency_ttl_s",
        "idempotency_max_keys",
        "log_poll_interval_s",
        "log_watch_max_s",
        "aws_timeout_s",
    )
    values = s.flat()
    for name in positive:
        if values[name] <= 0:
            raise ConfigError(f"{name.upper()} must be positive")
    wf, db, limits = s.workflows, s.database, s.limits
    if wf.log_retention_days < 0:
        raise ConfigError("LOG_RETENTION_DAYS must not be negative (0 keeps every run)")
    if wf.idempotency_store not in ("postgres", "memory"):
        raise ConfigError("IDEMPOTENCY_STORE must be postgres or memory")
    if wf.run_lease_s != 0 and not wf.run_lease_s >= MIN_RUN_LEASE_S:
        raise ConfigError(
            f"RUN_LEASE_S must be 0 (no leases) or at least {MIN_RUN_LEASE_S:g} seconds"
        )
    if db.relation_cache_ttl_s < 0:
        raise ConfigError("RELATION_CACHE_TTL_S must not be negative (0 turns the cache off)")
    if db.schema_cache_max_relations < 0:
        raise ConfigError("SCHEMA_CACHE_MAX_RELATIONS must not be negative (0 turns the cache off)")
    if db.schema_cache_max_bytes < 0:
        raise ConfigError("SCHEMA_CACHE_MAX_BYTES must not be negative")
    if not 0 <= s.server.grpc_port <= 65535:
        raise ConfigError("GRPC_PORT must be between 0 and 65535")
    _validate_envoy(s.sidecar)
    if not 0 <= db.db_pool_min <= db.db_pool_max:
        raise ConfigError("DB_POOL_MIN must be between 0 and DB_POOL_MAX")
    if db.db_pool_reserved_reads < -1 or db.pool_reserved_reads() >= db.db_pool_max:
        raise ConfigError(
            "DB_POOL_RESERVED_READS must be between 0 and DB_POOL_MAX - 1 (or -1 for a quarter "
            "of DB_POOL_MAX): caller SQL needs at least one connection"
        )
    if limits.stream_batch_rows > limits.max_stream_batch_rows:
        raise ConfigError("STREAM_BATCH_ROWS must not exceed MAX_STREAM_BATCH_ROWS")
    if limits.default_sample_limit > limits.max_sample_limit:
        raise ConfigError("DEFAULT_SAMPLE_LIMIT must not exceed MAX_SAMPLE_LIMIT")
    if s.logging.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    _validate_workflows(s)
    _validate_observability(s)
    _validate_tls(s.tls)
    _validate_database_roles(db)
    if s.server.drain_s < 0 and s.server.drain_s != -1:
        raise ConfigError("DRAIN_S must be 0 or more (or -1 for two health-check intervals)")
    if s.sidecar.envoy_health_check_interval_s <= 0:
        raise ConfigError("ENVOY_HEALTH_CHECK_INTERVAL_S must be positive")
    _validate_launcher(s.server)


def _validate_observability(s: Settings) -> None:
    m = s.metrics
    if s.logging.log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, got {s.logging.log_format!r}")
    if not 0 <= m.metrics_port <= 65535:
        raise ConfigError("METRICS_PORT must be between 1 and 65535, or 0 (no metrics)")
    if m.metrics_port and m.metrics_port == s.server.grpc_port:
        raise ConfigError(f"METRICS_PORT and GRPC_PORT are both {m.metrics_port}")
    if m.metrics_emf_interval_s <= 0:
        raise ConfigError("METRICS_EMF_INTERVAL_S must be positive")
    if not m.metrics_emf_namespace.strip():
        raise ConfigError("METRICS_EMF_NAMESPACE must not be empty")
    if m.gateway_process_index < 0:
        raise ConfigError("GATEWAY_PROCESS_INDEX must be 0 or more")


def _validate_launcher(s: ServerSettings) -> None:
    text = s.gateway_processes.strip()
    if text.lower() != "auto" and not (text.isascii() and text.isdigit() and int(text) > 0):
        raise ConfigError(
            "GATEWAY_PROCESSES must be a whole number of processes (1 or more) or auto (one "
            f"per CPU), got {s.gateway_processes!r}"
        )
    if s.restart_max < 1:
        raise ConfigError("RESTART_MAX must be 1 or more (1: a child that exits stops the stack)")
    if s.restart_window_s <= 0:
        raise ConfigError("RESTART_WINDOW_S must be positive")


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _validate_database_roles(s: DatabaseSettings) -> None:
    if s.db_sslmode and s.db_sslmode not in SSLMODES:
        raise ConfigError(f"DB_SSLMODE must be one of {', '.join(SSLMODES)} (or empty)")
    if s.db_readonly_password and not s.db_readonly_user:
        raise ConfigError("DB_READONLY_PASSWORD is set but DB_READONLY_USER is not")
    if s.db_watchdog_password and not s.db_watchdog_user:
        raise ConfigError("DB_WATCHDOG_PASSWORD is set but DB_WATCHDOG_USER is not")
    if s.db_state_password and not s.db_state_user:
        raise ConfigError("DB_STATE_PASSWORD is set but DB_STATE_USER is not")


def _validate_tls(s: TlsSettings) -> None:
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise ConfigError("TLS_CERT_FILE and TLS_KEY_FILE must be set together (or neither)")
    if s.tls_client_ca_file and not s.tls_cert_file:
        raise ConfigError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE (mTLS is TLS)")
    for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        path = getattr(s, name)
        if not path:
            continue
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{name.upper()} {path} is not readable: {exc.strerror}") from None


def _validate_envoy(s: SidecarSettings) -> None:
    if not -1 <= s.envoy_admin_port <= 65535:
        raise ConfigError(
            "ENVOY_ADMIN_PORT must be between 0 and 65535, or -1 (the default: Envoy's admin "
            "API on a Unix socket in DATA_DIR)"
        )
    if not is_loopback(s.envoy_admin_host):
        raise ConfigError(
            f"ENVOY_ADMIN_HOST must be a loopback address, got {s.envoy_admin_host!r}: "
            "Envoy's admin API can reconfigure and stop it"
        )
    for origin in s.cors_origins():
        if not ORIGIN.match(origin):
            raise ConfigError(
                "CORS_ALLOWED_ORIGINS must list exact origins, scheme://host[:port] (no path, "
                f"no wildcard), separated by commas; got {origin!r}"
            )


# One browser origin, as the Origin header carries it.
ORIGIN = re.compile(r"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, or the name localhost) only ever reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _validate_workflows(s: Settings) -> None:
    wf = s.workflows
    if 2 * wf.workflow_max_concurrent >= s.server.grpc_max_workers:
        raise ConfigError(
            "WORKFLOW_MAX_CONCURRENT must be less than half of GRPC_MAX_WORKERS: up to twice "
            "as many StartWorkflow calls may wait, and other RPCs need threads too"
        )
    if wf.log_store not in ("auto", "postgres", "dynamodb"):
        raise ConfigError("LOG_STORE must be one of auto, postgres, dynamodb")
    if wf.orchestrator_function and wf.orchestrator_handler:
        raise ConfigError(
            "set ORCHESTRATOR_FUNCTION (an AWS Lambda) or ORCHESTRATOR_HANDLER "
            "(a local module:function), not both"
        )
    for name in (
        "aws_endpoint_url",
        "lambda_endpoint_url",
        "dynamodb_endpoint_url",
        "secretsmanager_endpoint_url",
    ):
        value = getattr(s.aws, name)
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name.upper()} must be an http:// or https:// URL")
