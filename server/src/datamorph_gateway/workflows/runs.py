"""A run as the runner keeps it: its request and id, its outcome, and the callers waiting for it.

Every caller with the run's idempotency key waits on the same ``Run``. A wait ends with the
run's answer or error, at the caller's deadline (``WorkflowTimeout``, with the logs written
so far: the run goes on), or when ``should_stop`` says the RPC was cancelled (the run goes
on too), which is checked every ``STOP_CHECK_S``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datamorph_gateway.errors import Cancelled
from datamorph_gateway.logstore import RunLog
from datamorph_gateway.workflows.base import OrchestratorResult, WorkflowError, WorkflowTimeout

STOP_CHECK_S = 0.5


def new_run_id(now: dt.datetime | None = None) -> str:
    """``YYYYMMDD_HHMMSS_`` (UTC) and 8 random lowercase hex digits."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.strftime("%Y%m%d_%H%M%S_") + secrets.token_hex(4)


@dataclass(frozen=True)
class WorkflowRequest:
    """StartWorkflow's fields, checked (``validation``): the runner takes them as they are."""

    prompt: str
    source_tables: Sequence[str] = ()
    target_table: str = ""
    idempotency_key: str = ""

    def event(self, run_id: str) -> dict[str, Any]:
        """What the orchestrator gets; ``prompt`` twice, as DataMorph's reads ``user_prompt``."""
        return {
            "user_prompt": self.prompt,
            "prompt": self.prompt,
            "source_tables": list(self.source_tables),
            "target_table": self.target_table,
            "run_id": run_id,
        }

    def fingerprint(self) -> str:
        text = json.dumps([self.prompt, list(self.source_tables), self.target_table])
        return hashlib.sha256(text.encode()).hexdigest()


class Run:
    """One admitted run; every caller with its key waits on ``done``."""

    def __init__(self, run_id: str, fingerprint: str, key: str = "") -> None:
        self.run_id = run_id
        self.fingerprint = fingerprint
        self.key = key
        self.event: dict[str, Any] = {}  # what the orchestrator gets, until it gets it
        self.ready = threading.Event()  # launched, or refused before it started
        self.launched = False
        self.done = threading.Event()
        self.finished_at: float | None = None
        self.result: OrchestratorResult | None = None
        self.error: BaseException | None = None

    def outcome(self) -> OrchestratorResult:
        if self.error is not None:
            raise _fresh(self.error)
        assert self.result is not None
        return self.result


def time_left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def wait_for(
    run: Run,
    timeout_s: float | None,
    should_stop: Callable[[], bool] | None,
    logs_so_far: Callable[[str], RunLog | None],
) -> None:
    """Until ``run`` is done; ``logs_so_far`` gives a timeout's log entries."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise WorkflowTimeout(
                f"run {run.run_id} is still running after the request's deadline; "
                "its logs show its progress",
                run_id=run.run_id,
                run_log=logs_so_far(run.run_id),
            )
        wait_s = remaining
        if should_stop is not None:
            wait_s = STOP_CHECK_S if remaining is None else min(remaining, STOP_CHECK_S)
        if run.done.wait(wait_s):
            return
        if should_stop is not None and should_stop():
            raise cancelled(run.run_id)


def pause(seconds: float, run_id: str, should_stop: Callable[[], bool] | None) -> None:
    """Sleep, ending early (``cancelled``) when the caller stops waiting for ``run_id``."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, STOP_CHECK_S))
        if should_stop is not None and should_stop():
            raise cancelled(run_id)


def cancelled(run_id: str) -> WorkflowError:
    return WorkflowError(
        f"the request was cancelled; run {run_id} goes on",
        kind=Cancelled,
        reason="CANCELLED",
        metadata={"run_id": run_id},
    )


def _fresh(error: BaseException) -> BaseException:
    """A copy to raise, so that each caller's traceback stays off the remembered error."""
    clone = type(error).__new__(type(error), *error.args)
    clone.__dict__.update(error.__dict__)
    return clone
