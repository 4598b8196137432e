"""Workflow logs: one ``LogStore`` interface, a DynamoDB and a PostgreSQL adapter.

Which one (``LOG_STORE``): ``dynamodb`` reads DataMorph's own table, where its
Lambdas write; ``postgres`` keeps logs in the gateway's database, for the local
orchestrators. ``auto`` (the default) follows the orchestrator: an AWS Lambda
orchestrator (``ORCHESTRATOR_FUNCTION``) logs to DynamoDB, a local one to
PostgreSQL. A local handler that itself writes to DynamoDB wants
``LOG_STORE=dynamodb``.
"""

from __future__ import annotations

import boto3

from datamorph_gateway.config import AwsSettings, LimitsSettings, WorkflowSettings
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.logstore.base import (
    LOG_TYPES,
    TERMINAL_TYPES,
    LogEvent,
    LogStore,
    RunLog,
    check_run_id,
    make_entry,
    normalize_entry,
    utc_timestamp,
)
from datamorph_gateway.logstore.dynamodb import DynamoDBLogStore
from datamorph_gateway.logstore.postgres import PostgresLogStore

__all__ = [
    "LOG_TYPES",
    "TERMINAL_TYPES",
    "DynamoDBLogStore",
    "LogEvent",
    "LogStore",
    "PostgresLogStore",
    "RunLog",
    "check_run_id",
    "create_log_store",
    "log_store_kind",
    "make_entry",
    "normalize_entry",
    "utc_timestamp",
]


def log_store_kind(settings: WorkflowSettings) -> str:
    """``postgres`` or ``dynamodb``: LOG_STORE, with ``auto`` resolved."""
    if settings.log_store != "auto":
        return settings.log_store
    return "dynamodb" if settings.orchestrator_function else "postgres"


def create_log_store(
    settings: WorkflowSettings,
    aws: AwsSettings,
    limits: LimitsSettings,
    pool: ConnectionPool,
    *,
    session: boto3.session.Session | None = None,
) -> LogStore:
    """The configured store, ready to use (PostgreSQL tables created if missing, on ``pool``:
    the pool of the gateway's own tables, ``RolePools.own_tables``)."""
    if log_store_kind(settings) == "dynamodb":
        return DynamoDBLogStore.from_settings(settings, aws, session=session)
    store = PostgresLogStore(
        pool,
        timeout_s=limits.statement_timeout_s,
        poll_interval_s=settings.log_poll_interval_s,
        retention_s=settings.log_retention_days * 86400,
    )
    store.ensure_schema()
    return store
