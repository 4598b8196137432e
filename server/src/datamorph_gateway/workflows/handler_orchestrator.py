"""The local (handler) orchestrator: a Lambda-style handler ``(event, context)`` run in-process.

So a developer can run their own orchestrator handler against the gateway
without AWS (``ORCHESTRATOR_HANDLER=package.module:function``, importable from
the gateway's ``sys.path``), and so the built-in development orchestrator runs
through the same code path. The event and the answer go through JSON exactly
as they would to and from Lambda, so a handler that works here sends and
returns the same values there.

The context has what handlers commonly read from Lambda's (``aws_request_id``,
``function_name``, ``function_version``, ``invoked_function_arn``,
``get_remaining_time_in_millis()``), plus two gateway extensions that a
Lambda context does not have: ``append_log(entry)`` writes to the gateway's
log store under the event's run id, and ``connection()`` lends a pooled
connection to the gateway's database.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from datamorph_gateway.db.pool import Connection, ConnectionPool
from datamorph_gateway.errors import ConfigError, FailedPrecondition, GatewayError
from datamorph_gateway.logstore import LogStore
from datamorph_gateway.workflows.base import (
    OrchestratorResult,
    WorkflowError,
    parse_answer,
    result_from_answer,
)

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], "LocalContext"], Any]
DEV_HANDLER = "datamorph_gateway.workflows.sql_orchestrator:handler"


class LocalContext:
    """The ``context`` a local handler gets: Lambda's common attributes and two extensions."""

    function_version = "$LATEST"

    def __init__(
        self,
        *,
        function_name: str,
        run_id: str,
        timeout_s: float,
        log_store: LogStore | None,
        pool: ConnectionPool | None,
    ) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name
        safe_name = re.sub(r"[^A-Za-z0-9_-]", "-", function_name)
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{safe_name}"
        self.run_id = run_id
        self._deadline = time.monotonic() + timeout_s
        self._log_store = log_store
        self._pool = pool

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def append_log(self, entry: Mapping[str, Any]) -> bool:
        """Write one entry to the run's log; False if it could not be written.

        Never raises: like DataMorph's logger, a log that cannot be written
        must not fail the workflow. The failure goes to the server log.
        """
        if self._log_store is None:
            return False
        try:
            self._log_store.append(self.run_id, entry)
        except Exception:
            log.warning("run %s: could not write a log entry", self.run_id, exc_info=True)
            return False
        return True

    def connection(self) -> AbstractContextManager[Connection]:
        """A pooled connection to the gateway's database, with no transaction open.

        Commit what should last: the pool rolls back whatever is left open.
        """
        if self._pool is None:
            raise FailedPrecondition(
                "this local orchestrator has no database connection", reason="NO_DATABASE"
            )
        # The handler's SQL is not ours: whatever session state it leaves is discarded.
        return self._pool.connection(
            max(self.get_remaining_time_in_millis() / 1000, 0.001), reset_session=True
        )


class LocalOrchestrator:
    """Runs a handler in the calling thread (the runner's workflow thread).

    A handler that raises a ``GatewayError`` fails the request with that error
    (the built-in orchestrator does, for precise codes); any other exception
    is a function error, as in Lambda: its type and message reach the
    caller, its traceback only the server log.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        name: str,
        log_store: LogStore | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        self._handler = handler
        self.name = name
        self._log_store = log_store
        self._pool = pool

    @classmethod
    def from_spec(
        cls, spec: str, *, log_store: LogStore | None = None, pool: ConnectionPool | None = None
    ) -> LocalOrchestrator:
        """The handler named ``module:function`` (or Lambda's ``module.function``)."""
        return cls(load_handler(spec), name=spec, log_store=log_store, pool=pool)

    def close(self) -> None:
        """Nothing to release: the log store and pool belong to the caller."""

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> OrchestratorResult:
        run_id = str(event.get("run_id", ""))
        context = LocalContext(
            function_name=self.name,
            run_id=run_id,
            timeout_s=timeout_s,
            log_store=self._log_store,
            pool=self._pool,
        )
        try:
            answer = self._handler(json.loads(json.dumps(event)), context)
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("run %s: orchestrator handler %s raised", run_id, self.name)
            message = str(exc)
            text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
            raise WorkflowError(
                f"the orchestrator failed: {text}",
                reason="ORCHESTRATOR_FUNCTION_ERROR",
                metadata={"run_id": run_id, "error_type": type(exc).__name__},
            ) from None
        try:
            raw = json.dumps(answer)
        except (TypeError, ValueError) as exc:
            # What Lambda's runtime answers as Runtime.MarshalError.
            raise WorkflowError(
                f"the orchestrator's answer cannot be sent as JSON: {exc}",
                reason="ORCHESTRATOR_BAD_ANSWER",
                metadata={"run_id": run_id},
            ) from None
        return result_from_answer(parse_answer(raw, run_id), run_id)


def load_handler(spec: str) -> Handler:
    """Import ``module:function``; every way it can fail is a ConfigError naming the key."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"ORCHESTRATOR_HANDLER {spec!r} must look like package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"ORCHESTRATOR_HANDLER {spec!r}: cannot import {module_name}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"ORCHESTRATOR_HANDLER {spec!r}: {module_name} has no attribute {attr!r}"
            ) from None
    if not callable(target):
        raise ConfigError(f"ORCHESTRATOR_HANDLER {spec!r} is not callable")
    handler: Handler = target
    return handler
