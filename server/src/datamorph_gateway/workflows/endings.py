"""The log entries the gateway writes itself, when a run ends without its orchestrator saying so.

Two cases, so that a run id the gateway handed out always leads to a log that ends:

- a run whose invocation failed (the orchestrator refused it, crashed, timed out, could not
  be reached) and whose log does not already end with an ``error`` or ``end`` entry gets
  both, saying what its caller was answered;
- a run whose gateway stopped (its lease lapsed, see ``leases``) gets both from the gateway
  that found it, saying when its gateway was last known to be alive.

The entries have the contract's shape, as DataMorph's agents write theirs: ``error`` with
``error_type`` and ``error_message`` in its metadata, then ``end`` with ``workflow_status``;
``source: "gateway"`` in both tells them from the orchestrator's own.
"""

from __future__ import annotations

from typing import Any

from datamorph_gateway.errors import Aborted, DeadlineExceeded, GatewayError
from datamorph_gateway.logstore import RunLog, make_entry, utc_timestamp
from datamorph_gateway.workflows.base import WorkflowError
from datamorph_gateway.workflows.leases import Lapsed

ABANDONED = "RUN_ABANDONED"
_ENDED = frozenset({"error", "end"})


def has_ended(run_log: RunLog | None) -> bool:
    """Whether the run's newest entry is an error or end entry."""
    return run_log is not None and bool(run_log.logs) and run_log.logs[-1]["type"] in _ENDED


def ended_as_abandoned(run_log: RunLog | None) -> bool:
    """Whether the run's newest entry is the end an abandoned run gets (``abandoned_entries``)."""
    if run_log is None or not run_log.logs:
        return False
    newest = run_log.logs[-1]
    return bool(newest["type"] == "end" and newest["metadata"].get("error_type") == ABANDONED)


def failure_entries(error: BaseException) -> list[dict[str, Any]]:
    """Error and end entries saying what a failed run's caller was answered."""
    if isinstance(error, GatewayError):
        code, reason, message = error.kind_name, error.reason, error.message
        status = "timed_out" if error.kind is DeadlineExceeded else "failed"
    else:
        code, reason, message = "INTERNAL", "INTERNAL", "the workflow failed inside the gateway"
        status = "failed"
    return [
        make_entry(
            "error",
            f"Error: {reason}",
            message,
            {"error_type": reason, "error_message": message, "code": code, "source": "gateway"},
        ),
        make_entry(
            "end",
            "Run Ended",
            "The run ended with an error the gateway answered its caller with",
            {"workflow_status": status, "error_type": reason, "source": "gateway"},
        ),
    ]


def _last_seen(lapsed: Lapsed) -> str:
    when = utc_timestamp(lapsed.renewed_at)
    if not lapsed.gateway:
        return f"the gateway running it kept no lease and it never finished (started {when})"
    return f"the gateway running it ({lapsed.gateway}) stopped renewing its lease after {when}"


def abandoned_entries(lapsed: Lapsed, *, lease_s: float, ended_by: str) -> list[dict[str, Any]]:
    """Error and end entries for a run whose gateway stopped."""
    message = (
        f"Run abandoned: {_last_seen(lapsed)}. Its outcome is unknown (an orchestrator such as "
        "a Lambda may have gone on without it), and it will not be run again."
    )
    metadata = {
        "error_type": ABANDONED,
        "error_message": message,
        "gateway": lapsed.gateway,
        "last_renewed_at": utc_timestamp(lapsed.renewed_at),
        "run_lease_s": lease_s,
        "ended_by": ended_by,
        "source": "gateway",
    }
    return [
        make_entry("error", f"Error: {ABANDONED}", message, metadata),
        make_entry(
            "end",
            "Run Ended: Abandoned",
            "The run ended without an answer: the gateway running it stopped",
            {"workflow_status": "abandoned", "error_type": ABANDONED, "source": "gateway"},
        ),
    ]


def abandoned_error(lapsed: Lapsed) -> WorkflowError:
    """What a repeat of an abandoned run's request is answered (its key's recorded outcome)."""
    return WorkflowError(
        f"run {lapsed.run_id} never finished: {_last_seen(lapsed)}; its logs show how far it "
        "got, and this idempotency key will not start another run",
        kind=Aborted,
        reason=ABANDONED,
        metadata={"run_id": lapsed.run_id},
    )
