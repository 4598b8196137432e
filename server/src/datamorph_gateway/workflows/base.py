"""The orchestrator port: what the gateway sends, what it makes of the answer.

Both adapters (AWS Lambda, local callable) get the same JSON event and hand
back the same JSON answer, so one parser reads both, as DataMorph's
orchestrator writes it: ``{"statusCode": 200, "body": {...}}`` with ``body`` a
dict or a JSON string, or Lambda's ``{"errorType", "errorMessage",
"stackTrace"}`` for a function error. Stack traces never reach a caller.

Workflow errors, beside those in ``errors``::

    GatewayError
    ├── WorkflowError          the orchestrator failed or answered an error, or a run
    │                          ended without an answer; its ``kind`` comes from the
    │                          orchestrator's statusCode (Internal for 5xx) or the runner
    └── DeadlineExceeded
        └── WorkflowTimeout    no answer in time; carries the run id and the
                               newest log entries written so far
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from datamorph_gateway.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    GatewayError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from datamorph_gateway.logstore import RunLog

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000
"""A status message travels in an HTTP/2 header: keep it well below header limits."""
MAX_LOG_DETAIL_BYTES = 4096
"""Budget for the log entries in a timeout's status details: they travel in a trailer,
and gRPC clients refuse metadata over 8 KiB by default."""

# HTTP statuses an orchestrator may answer, as kinds of error (google.rpc's mapping of
# codes to HTTP statuses, reversed).
_HTTP_KINDS: dict[int, type[GatewayError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: AlreadyExists,
    412: FailedPrecondition,
    429: ResourceExhausted,
    499: Cancelled,
    501: Unimplemented,
    503: Unavailable,
    504: DeadlineExceeded,
}


@dataclass(frozen=True)
class OrchestratorResult:
    """A successful answer: what StartWorkflow returns."""

    run_id: str
    """The answer's ``run_id`` if it gave one, else the gateway's."""
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    """The orchestrator's result body, as it returned it."""


class Orchestrator(Protocol):
    """Runs one workflow and answers when it is over."""

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> OrchestratorResult:
        """Run the workflow the event describes, exactly once.

        ``timeout_s`` is how long the workflow may take (a local handler sees
        it as its remaining time; a Lambda's bound is its own read timeout).
        Raises ``OrchestratorTimeout`` when no answer came in time, and
        ``GatewayError`` for everything else that went wrong.
        """
        ...

    def close(self) -> None:
        """Release clients."""
        ...


class OrchestratorTimeout(Exception):
    """No answer in time; the runner turns this into a ``WorkflowTimeout`` with the logs."""


class WorkflowError(GatewayError):
    """The orchestrator ran and failed, or could not be run; ``kind`` says which.

    The kind is given, not the class, as a ``QueryError``'s is: an orchestrator that
    answers 404 is not the gateway's own ``NotFound``.
    """

    reason = "WORKFLOW_FAILED"

    def __init__(
        self,
        message: str,
        *,
        kind: type[GatewayError] = Internal,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(_clip(message), reason=reason, metadata=metadata)
        self.kind = kind


class WorkflowTimeout(DeadlineExceeded):
    """The run did not finish in time; it may still be running.

    The status carries the run id in ErrorInfo metadata, and a Struct detail
    ``{"run_id", "log_count", "logs", "logs_truncated", "created_at",
    "updated_at"}`` with the newest entries that fit ``MAX_LOG_DETAIL_BYTES``
    (``log_count`` counts all; GetLogs has every entry).
    """

    reason = "WORKFLOW_TIMEOUT"

    def __init__(self, message: str, *, run_id: str, run_log: RunLog | None) -> None:
        super().__init__(
            _clip(message),
            metadata={"run_id": run_id},
            json_detail=_log_detail(run_id, run_log),
        )
        self.run_id = run_id
        self.run_log = run_log


def _log_detail(run_id: str, run_log: RunLog | None) -> dict[str, Any]:
    """The newest entries that fit the budget; an entry too big whole keeps its headline."""
    logs = run_log.logs if run_log is not None else []
    kept: list[dict[str, Any]] = []
    used = 0
    truncated = False
    for entry in reversed(logs):
        size = _json_size(entry)
        if used + size > MAX_LOG_DETAIL_BYTES:
            truncated = True
            entry = {**entry, "metadata": {}}
            size = _json_size(entry)
            if used + size > MAX_LOG_DETAIL_BYTES:
                break
        kept.append(entry)
        used += size
    kept.reverse()
    return {
        "run_id": run_id,
        "log_count": len(logs),
        "logs": kept,
        "logs_truncated": truncated or len(kept) < len(logs),
        "created_at": run_log.created_at if run_log else "",
        "updated_at": run_log.updated_at if run_log else "",
    }


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def parse_answer(raw: bytes | str, run_id: str, *, function_error: str | None = None) -> Any:
    """The orchestrator's JSON answer as a value, or the error a caller should get.

    ``function_error`` is Lambda's FunctionError ("Unhandled", "Handled"):
    the payload then describes the failure and is never passed on whole.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        payload = json.loads(text) if text.strip() else None
    except ValueError:
        payload = _NOT_JSON
    if function_error is not None:
        raise _function_error(payload, function_error, run_id)
    if payload is _NOT_JSON:
        log.warning("run %s: orchestrator answer is not JSON: %.200r", run_id, text)
        raise WorkflowError(
            "the orchestrator's answer is not JSON",
            reason="ORCHESTRATOR_BAD_ANSWER",
            metadata={"run_id": run_id},
        )
    return payload


_NOT_JSON = object()


def _function_error(payload: Any, kind: str, run_id: str) -> GatewayError:
    error_type = kind
    error_message = ""
    if isinstance(payload, dict):
        error_type = str(payload.get("errorType") or kind)
        error_message = str(payload.get("errorMessage") or "")
    metadata = {"run_id": run_id, "error_type": error_type}
    # Lambda's own timeout ("Task timed out after 900.00 seconds").
    if error_type == "Sandbox.Timedout" or error_message.startswith("Task timed out"):
        raise OrchestratorTimeout(f"the orchestrator timed out: {error_message or error_type}")
    text = f"{error_type}: {error_message}" if error_message else error_type
    return WorkflowError(
        f"the orchestrator failed: {text}", reason="ORCHESTRATOR_FUNCTION_ERROR", metadata=metadata
    )


def result_from_answer(payload: Any, run_id: str) -> OrchestratorResult:
    """Read ``{"statusCode", "body"}``; statusCode >= 400 raises, with the body's message.

    An answer without ``statusCode`` is taken as the body itself, as a plain
    handler might return it. A body that is not an object is kept under
    ``details["body"]``.
    """
    if not isinstance(payload, dict):
        raise WorkflowError(
            f"the orchestrator's answer is not a JSON object but {_json_kind(payload)}",
            reason="ORCHESTRATOR_BAD_ANSWER",
            metadata={"run_id": run_id},
        )
    if "statusCode" in payload:
        status = payload["statusCode"]
        body = _body(payload.get("body"))
    else:
        status, body = 200, payload
    if isinstance(status, bool) or not isinstance(status, (int, float)):
        raise WorkflowError(
            "the orchestrator's statusCode is not a number",
            reason="ORCHESTRATOR_BAD_ANSWER",
            metadata={"run_id": run_id},
        )
    status = int(status)
    answered_id = body.get("run_id")
    final_id = answered_id if isinstance(answered_id, str) and answered_id else run_id
    message = body.get("message")
    if status >= 400:
        detail = message if isinstance(message, str) and message else None
        if detail is None and isinstance(body.get("error"), str):
            detail = body["error"]
        metadata = {"run_id": final_id, "status_code": str(status)}
        if isinstance(body.get("error_type"), str):
            metadata["error_type"] = body["error_type"]
        raise WorkflowError(
            detail or f"the orchestrator failed with statusCode {status}",
            kind=_HTTP_KINDS.get(status, FailedPrecondition if status < 500 else Internal),
            reason="ORCHESTRATOR_ERROR",
            metadata=metadata,
        )
    return OrchestratorResult(final_id, message if isinstance(message, str) else "", body)


def _body(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {"message": raw}
    return raw if isinstance(raw, dict) else {"body": raw}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number" if not isinstance(value, bool) else "a boolean"
