"""The DataMorphGateway service: has each request checked, calls the layer that does the work.

Every request goes through ``validation`` first, so nothing reaches the database or
the orchestrator before the whole request has been checked; what comes back from the
layers below is written into the response messages here.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway import __version__
from datamorph_gateway.audit import audited
from datamorph_gateway.auth.authenticator import Authenticator, principal_key
from datamorph_gateway.auth.policy import Principal
from datamorph_gateway.callers import CallerLimits, caller_key
from datamorph_gateway.config import Settings
from datamorph_gateway.db.connect import DatabaseLogin
from datamorph_gateway.db.database import Database
from datamorph_gateway.db.decoding import ColumnType
from datamorph_gateway.db.query import QueryResult
from datamorph_gateway.errors import GatewayError, Unavailable
from datamorph_gateway.identity import ClientIdentities
from datamorph_gateway.observability import metrics
from datamorph_gateway.rpc import (
    Method,
    Req,
    Resp,
    cancel_scope,
    principal_var,
    rows_var,
    rpc,
    rpc_stream,
    time_budget_s,
)
from datamorph_gateway.schema_cache import SchemaCache
from datamorph_gateway.validation import Validator
from datamorph_gateway.wire import append_array_rows, append_object_rows, from_value
from datamorph_gateway.workflows import WorkflowRunner

log = logging.getLogger(__name__)

SUCCESS = "success"


def login_of(principal: Principal) -> DatabaseLogin | None:
    """A principal's own database login, if the policy gives it one."""
    if not principal.database_user:
        return None
    return DatabaseLogin(
        principal.database_user, principal.database_secret, principal.database_iam_auth
    )


def _login() -> DatabaseLogin | None:
    """The calling principal's own database login, if the policy gives it one."""
    return login_of(principal_var.get())


def _counted_per_caller(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Caller SQL: the call counts against MAX_CONCURRENT_QUERIES_PER_CALLER while it runs."""

    @functools.wraps(method)
    def wrapper(self: GatewayServicer, request: Req, context: grpc.ServicerContext) -> Resp:
        with self._callers.hold(self._caller_key(context)):
            return method(self, request, context)

    return wrapper


def _streamed_per_caller(
    method: Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]],
) -> Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]]:
    """The same for a stream: it counts until the last message is sent or the call ends."""

    @functools.wraps(method)
    def wrapper(
        self: GatewayServicer, request: Req, context: grpc.ServicerContext
    ) -> Iterator[Resp]:
        with self._callers.hold(self._caller_key(context)):
            yield from method(self, request, context)

    return wrapper


class GatewayServicer(pb_grpc.DataMorphGatewayServicer):
    """Maps each RPC onto the database layer or the workflow runner."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        workflows: WorkflowRunner,
        identities: ClientIdentities | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        # The root settings: the servicer reads the limits and LOG_WATCH_MAX_S, and builds the
        # Validator (limits) and, unless given one, the Authenticator (auth, aws).
        self._db = database
        self._workflows = workflows
        # The caller's verified client certificate (mTLS), for the auth policy to name.
        self.identities = identities or ClientIdentities(None)
        self.auth = authenticator or Authenticator(settings.auth, settings.aws, self.identities)
        self._limits = settings.limits
        self._log_watch_max_s = settings.workflows.log_watch_max_s
        self._check = Validator(settings.limits)
        self._callers = CallerLimits(settings.limits.max_concurrent_queries_per_caller)
        self._schemas = SchemaCache(
            settings.database.schema_cache_max_relations, settings.database.schema_cache_max_bytes
        )
        self.draining = False  # set by Gateway.stop: Health answers "draining"

    def authorize(self, rpc: str, context: grpc.ServicerContext) -> Principal:
        """Who calls, and whether it may call ``rpc`` (called by ``@rpc`` for every call)."""
        return self.auth.authorize(rpc, context)

    def _caller_key(self, context: grpc.ServicerContext) -> str:
        """Per-caller limits count a named principal, else the client's address."""
        return principal_key(principal_var.get()) or caller_key(
            context, self.identities.forwarded_for(context)
        )

    # -- tables ----------------------------------------------------------------

    @rpc
    def GetSchemas(self, request: pb.GetSchemasRequest, context: grpc.ServicerContext) -> bytes:
        """Answers with a serialized GetSchemasResponse (``rpc.PassSerialized`` sends it as it
        is): a warm call's answer is kept whole, and a new one joined from kept parts."""
        originals = list(request.table_names)
        names = self._check.get_schemas(request)
        kept = self._schemas.enabled
        with cancel_scope(context, self._limits.statement_timeout_s) as scope:
            found = self._db.get_schemas(
                names,
                originals,
                scope.timeout_s,
                scope=scope,
                login=_login(),
                cached=self._schemas.lookup if kept else None,
                answered=self._schemas.answer if kept else None,
                holds=self._schemas.holds if kept else None,
            )
        if found.answer is not None:
            return found.answer
        return self._schemas.assemble(SUCCESS, originals, found.tables, found.request)

    @rpc
    def GetData(
        self, request: pb.GetDataRequest, context: grpc.ServicerContext
    ) -> pb.GetDataResponse:
        originals = list(request.table_names)
        names, limit = self._check.get_data(request)
        with cancel_scope(context, self._limits.statement_timeout_s) as scope:
            samples = self._db.get_data(
                names, originals, limit, scope.timeout_s, scope=scope, login=_login()
            )
        response = pb.GetDataResponse(status=SUCCESS)
        rows_var.set(sum(len(sample.rows) for sample in samples))
        for original, sample in zip(originals, samples, strict=True):
            append_object_rows(response.data[original].values, sample.keys, sample.rows)
            add_column = response.columns[original].values.add
            for key, column in zip(sample.keys, sample.columns, strict=True):
                fields = add_column().struct_value.fields
                fields["name"].string_value = key
                fields["type"].string_value = column.name
        return response

    # -- SQL ---------------------------------------------------------------------

    @rpc
    @_counted_per_caller
    def ExecuteQuery(
        self, request: pb.ExecuteQueryRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteQueryResponse:
        checked = self._check.execute_query(request, principal_var.get())
        params = [from_value(v) for v in request.params]
        with (
            cancel_scope(context, self._limits.statement_timeout_s) as scope,
            audited(
                context,
                forwarded_for=self.identities.forwarded_for(context),
                query=request.query,
                param_count=len(params),
                read_only=checked.read_only,
            ) as tally,
        ):
            result = self._db.execute(
                checked.script,
                params,
                read_only=checked.read_only,
                max_rows=checked.max_rows,
                timeout_s=scope.timeout_s,
                scope=scope,
                login=_login(),
            )
            tally.rows = len(result.rows)
        rows_var.set(tally.rows)
        if result.truncated:
            metrics.result_truncated()
        return self._query_response(result, request.row_format)

    @rpc_stream
    @_streamed_per_caller
    def StreamQuery(
        self, request: pb.StreamQueryRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamQueryResponse]:
        checked = self._check.stream_query(request)
        params = [from_value(v) for v in request.params]
        with (
            cancel_scope(context, self._limits.stream_timeout_s) as scope,
            audited(
                context,
                forwarded_for=self.identities.forwarded_for(context),
                query=request.query,
                param_count=len(params),
                read_only=True,
            ) as tally,
        ):
            batches = self._db.stream(
                checked.statement,
                params,
                batch_rows=checked.batch_rows,
                timeout_s=scope.timeout_s,
                scope=scope,
                login=_login(),
            )
            previous: pb.StreamQueryResponse | None = None
            for batch in batches:
                response = pb.StreamQueryResponse(status=SUCCESS)
                if previous is None:
                    _add_columns(response.columns, batch.names, batch.columns, batch.keys)
                _append_rows(response.rows, batch.keys, batch.rows, request.row_format)
                tally.rows += len(batch.rows)
                rows_var.set(tally.rows)
                metrics.stream_rows("StreamQuery", len(batch.rows))
                response.rows_sent = tally.rows
                # Held back one step, so that the last message can say done.
                if previous is not None:
                    yield previous
                previous = response
            if previous is not None:
                previous.done = True
                yield previous

    def _query_response(self, result: QueryResult, row_format: int) -> pb.ExecuteQueryResponse:
        response = pb.ExecuteQueryResponse(
            status=SUCCESS,
            row_count=len(result.rows),
            rows_affected=float(result.rows_affected),
            command=result.command,
            truncated=result.truncated,
        )
        _add_columns(response.columns, result.names, result.columns, result.keys)
        _append_rows(response.rows, result.keys, result.rows, row_format)
        return response

    # -- workflows and logs --------------------------------------------------------

    @rpc
    def StartWorkflow(
        self, request: pb.StartWorkflowRequest, context: grpc.ServicerContext
    ) -> pb.StartWorkflowResponse:
        workflow = self._check.start_workflow(request)
        remaining = context.time_remaining()
        result = self._workflows.start(
            workflow,
            timeout_s=None if remaining is None else float(remaining),
            on_run_id=lambda run_id: context.send_initial_metadata(
                (("x-datamorph-run-id", run_id),)
            ),
            should_stop=lambda: not context.is_active(),
        )
        response = pb.StartWorkflowResponse(
            status=SUCCESS, run_id=result.run_id, message=result.message
        )
        response.details.update(result.details)
        return response

    @rpc
    def GetLogs(
        self, request: pb.GetLogsRequest, context: grpc.ServicerContext
    ) -> pb.GetLogsResponse:
        self._check.get_logs(request)
        run = self._workflows.get_logs(request.run_id)
        response = pb.GetLogsResponse(
            status=SUCCESS,
            run_id=run.run_id,
            log_count=len(run.logs),
            created_at=run.created_at,
            updated_at=run.updated_at,
        )
        for entry in run.logs:
            _log_entry(response.logs.add(), entry)
        return response

    @rpc_stream
    def WatchLogs(
        self, request: pb.WatchLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchLogsResponse]:
        self._check.watch_logs(request)
        events = self._workflows.watch(
            request.run_id,
            timeout_s=time_budget_s(context, self._log_watch_max_s),
            start=request.start_index,
            should_stop=lambda: not context.is_active(),
        )
        for event in events:
            response = pb.WatchLogsResponse(run_id=request.run_id, index=event.index)
            _log_entry(response.entry, event.entry)
            metrics.stream_rows("WatchLogs", 1)
            yield response

    # -- health ------------------------------------------------------------------------

    def check_health(self) -> pb.HealthResponse:
        """Check every dependency within the configured timeout.

        The database is checked on a connection of its own, so a pool that slow
        callers have filled cannot fail it; the pool is a check of its own, whose
        "degraded" leaves the gateway healthy.
        """
        response = pb.HealthResponse(status="healthy", version=__version__)
        if self.draining:
            response.status = "unhealthy"
            response.checks["gateway"].status = "unhealthy"
            response.checks["gateway"].message = "draining: this process is shutting down"
        start = time.perf_counter()
        check = response.checks["database"]
        try:
            self._db.check(self._limits.health_check_timeout_s)
            check.status = "healthy"
        except GatewayError as exc:
            check.status = "unhealthy"
            check.message = exc.message
            response.status = "unhealthy"
        check.latency_ms = (time.perf_counter() - start) * 1000
        _pool_check(response.checks["pool"], self._db.pool.stats())
        return response

    @rpc
    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        response = self.check_health()
        if response.status != "healthy":
            failing = ", ".join(k for k, v in response.checks.items() if v.status == "unhealthy")
            raise Unavailable(f"unhealthy: {failing}", reason="UNHEALTHY", extra_details=[response])
        return response


def _pool_check(check: pb.HealthCheck, stats: Mapping[str, int]) -> None:
    """Healthy, or "degraded" while every connection (or caller SQL's share) is busy."""
    check.status = "healthy"
    if stats["busy"] >= stats["max"]:
        check.message = f"{stats['busy']} of {stats['max']} connections busy"
    elif stats["shared_busy"] >= stats["shared_max"]:
        check.message = (
            f"{stats['shared_busy']} of {stats['shared_max']} connections for caller SQL busy "
            f"({stats['reserved']} kept for reads)"
        )
    else:
        return
    check.status = "degraded"
    if stats["shared_waiting"]:
        check.message += f"; {stats['shared_waiting']} queries waiting"


def _add_columns(
    dest: Any, names: Sequence[str], columns: Sequence[ColumnType], keys: Sequence[str]
) -> None:
    for name, column, key in zip(names, columns, keys, strict=True):
        dest.add(name=name, type=column.name, key=key)


def _append_rows(
    dest: Any, keys: Sequence[str], rows: Sequence[Sequence[Any]], row_format: int
) -> None:
    if row_format == pb.ROW_FORMAT_ARRAY:
        append_array_rows(dest, rows)
    else:
        append_object_rows(dest, keys, rows)


def _log_entry(target: pb.LogEntry, entry: dict[str, Any]) -> None:
    target.timestamp = str(entry.get("timestamp", ""))
    target.type = str(entry.get("type", ""))
    target.title = str(entry.get("title", ""))
    target.description = str(entry.get("description", ""))
    metadata = entry.get("metadata")
    if isinstance(metadata, dict):
        target.metadata.update(metadata)
