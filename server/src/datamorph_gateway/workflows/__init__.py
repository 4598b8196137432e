"""Workflows: one ``Orchestrator`` interface, an AWS Lambda and a local adapter, and the runner.

Which orchestrator: ``ORCHESTRATOR_FUNCTION`` names an AWS Lambda
(``aws_lambda``); ``ORCHESTRATOR_HANDLER`` a local ``module:function``, run
in-process (``handler_orchestrator``); with neither, the built-in development
orchestrator (``sql_orchestrator``, through the same handler path), which
materializes a SQL query and needs no AWS and no AI.
"""

from __future__ import annotations

import boto3

from datamorph_gateway.config import AwsSettings, LimitsSettings, WorkflowSettings
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.logstore import LogStore, create_log_store
from datamorph_gateway.workflows.aws_lambda import LambdaOrchestrator
from datamorph_gateway.workflows.base import (
    Orchestrator,
    OrchestratorResult,
    OrchestratorTimeout,
    WorkflowError,
    WorkflowTimeout,
)
from datamorph_gateway.workflows.handler_orchestrator import (
    DEV_HANDLER,
    LocalContext,
    LocalOrchestrator,
)
from datamorph_gateway.workflows.idempotency_store import Ledger
from datamorph_gateway.workflows.leases import Lapsed, RunLeases
from datamorph_gateway.workflows.runner import WorkflowRunner
from datamorph_gateway.workflows.runs import WorkflowRequest, new_run_id

__all__ = [
    "DEV_HANDLER",
    "LambdaOrchestrator",
    "Lapsed",
    "Ledger",
    "LocalContext",
    "LocalOrchestrator",
    "Orchestrator",
    "OrchestratorResult",
    "OrchestratorTimeout",
    "RunLeases",
    "WorkflowError",
    "WorkflowRequest",
    "WorkflowRunner",
    "WorkflowTimeout",
    "create_orchestrator",
    "create_runner",
    "new_run_id",
]


def create_orchestrator(
    settings: WorkflowSettings,
    aws: AwsSettings,
    log_store: LogStore,
    pool: ConnectionPool,
    *,
    session: boto3.session.Session | None = None,
) -> Orchestrator:
    """The configured orchestrator; a bad ORCHESTRATOR_HANDLER is a ConfigError now."""
    if settings.orchestrator_function:
        return LambdaOrchestrator.from_settings(settings, aws, session=session)
    return LocalOrchestrator.from_spec(
        settings.orchestrator_handler or DEV_HANDLER, log_store=log_store, pool=pool
    )


def create_runner(
    settings: WorkflowSettings,
    aws: AwsSettings,
    limits: LimitsSettings,
    pool: ConnectionPool,
    *,
    tables: ConnectionPool | None = None,
    session: boto3.session.Session | None = None,
) -> WorkflowRunner:
    """Everything StartWorkflow, GetLogs and WatchLogs need, built from the settings.

    ``aws`` serves the Lambda orchestrator and the DynamoDB log store; ``limits`` gives
    STATEMENT_TIMEOUT_S to the gateway's own tables (logs, idempotency keys, leases).
    ``pool`` is the serving role's pool (the local orchestrators use it); ``tables`` the
    pool of the gateway's own tables, which the PostgreSQL log store, the idempotency keys
    and the leases use (``RolePools.own_tables``; ``pool`` when None). ``session`` carries
    AWS credentials (boto3's default chain when None). Close the runner to release it all.
    """
    tables = pool if tables is None else tables
    log_store = create_log_store(settings, aws, limits, tables, session=session)
    try:
        orchestrator = create_orchestrator(settings, aws, log_store, pool, session=session)
        ledger = None
        if settings.idempotency_store == "postgres":
            ledger = Ledger(
                tables,
                ttl_s=settings.idempotency_ttl_s,
                # Runs without a lease: the longest a run may take, and a minute for its
                # gateway to record it.
                abandon_after_s=settings.orchestrator_read_timeout_s + 60,
                timeout_s=limits.statement_timeout_s,
            )
            ledger.ensure_schema()
        leases = None
        if settings.run_lease_s > 0:
            leases = RunLeases(
                tables, lease_s=settings.run_lease_s, timeout_s=limits.statement_timeout_s
            )
            leases.ensure_schema()
    except BaseException:
        log_store.close()
        raise
    return WorkflowRunner(settings, orchestrator, log_store, ledger, leases=leases)
