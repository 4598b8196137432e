"""StartWorkflow's engine: run ids, at-most-once invocation, idempotency keys, a concurrency bound.

Each admitted workflow runs on a thread of its own (at most
``workflow_max_concurrent`` at once), so the RPC thread that asked can stop
waiting at its deadline while the workflow goes on. The threads are daemons:
a shutdown is not held up by a 15-minute Lambda call (which goes on in AWS
and still writes its logs).

Limits answer RESOURCE_EXHAUSTED at once, never queue: ``workflow_max_concurrent``
running workflows, or twice that many StartWorkflow calls already waiting for
answers (a retry may wait beside the call it retries), so that StartWorkflow
never holds every RPC thread.

Idempotency keys are remembered in this process's memory, for
``idempotency_ttl_s`` after the run ends and at most ``idempotency_max_keys``
of them (oldest finished first out). A repeat with the same key gets the
first run's answer or error, waiting for it if the run is still going, and
never starts another; a repeat with the same key but a different request is
INVALID_ARGUMENT. A key is only taken once its run is admitted, so a request
refused by a limit or by validation can be retried with the same key. With a
``Ledger`` (``IDEMPOTENCY_STORE=postgres``, the default) a key this process has
not seen is claimed in the database first, so it also holds across restarts and
replicas: a repeat that reaches another gateway waits for the run by polling
the ledger, then replays its recorded answer or error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from datamorph_gateway.config import Settings
from datamorph_gateway.db.names import InvalidTableName, parse_table_name
from datamorph_gateway.errors import (
    DeadlineExceeded,
    FieldViolation,
    GatewayError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    clip,
)
from datamorph_gateway.logstore import LogEvent, LogStore, RunLog, check_run_id
from datamorph_gateway.workflows.base import (
    Orchestrator,
    OrchestratorResult,
    OrchestratorTimeout,
    WorkflowError,
    WorkflowTimeout,
)
from datamorph_gateway.workflows.ledger import Held, Ledger, outcome_of, replay

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY_CHARS = 256
STOP_CHECK_S = 0.5


def new_run_id(now: dt.datetime | None = None) -> str:
    """``YYYYMMDD_HHMMSS_`` (UTC) and 8 random lowercase hex digits."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.strftime("%Y%m%d_%H%M%S_") + secrets.token_hex(4)


@dataclass(frozen=True)
class WorkflowRequest:
    """StartWorkflow's fields, as the caller sent them."""

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


class _Run:
    """One admitted run; every caller with its key waits on ``done``."""

    def __init__(self, run_id: str, fingerprint: str, key: str = "") -> None:
        self.run_id = run_id
        self.fingerprint = fingerprint
        self.key = key
        self.done = threading.Event()
        self.finished_at: float | None = None
        self.result: OrchestratorResult | None = None
        self.error: BaseException | None = None

    def outcome(self) -> OrchestratorResult:
        if self.error is not None:
            raise _fresh(self.error)
        assert self.result is not None
        return self.result


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _cancelled(run_id: str) -> WorkflowError:
    return WorkflowError(
        f"the request was cancelled; run {run_id} goes on",
        code=grpc.StatusCode.CANCELLED,
        reason="CANCELLED",
        metadata={"run_id": run_id},
    )


def _fresh(error: BaseException) -> BaseException:
    """A copy to raise, so that each caller's traceback stays off the remembered error."""
    clone = type(error).__new__(type(error), *error.args)
    clone.__dict__.update(error.__dict__)
    return clone


class WorkflowRunner:
    """Starts workflows on the orchestrator and reads their logs; owns both."""

    def __init__(
        self,
        settings: Settings,
        orchestrator: Orchestrator,
        log_store: LogStore,
        ledger: Ledger | None = None,
    ) -> None:
        self._settings = settings
        self.orchestrator = orchestrator
        self.log_store = log_store
        self._ledger = ledger
        self._max = settings.workflow_max_concurrent
        self._lock = threading.Lock()
        self._running: dict[str, _Run] = {}
        self._waiting = 0
        self._keys: OrderedDict[str, _Run] = OrderedDict()
        self._threads: set[threading.Thread] = set()
        self._closed = False

    # -- StartWorkflow --------------------------------------------------------------

    def start(
        self,
        request: WorkflowRequest,
        *,
        timeout_s: float | None = None,
        on_run_id: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> OrchestratorResult:
        """Run the workflow (or join the run with the same idempotency key) and answer.

        ``timeout_s`` is the caller's remaining time (None: wait for the
        answer). ``on_run_id`` is called with the run id before the wait, e.g.
        to send it as initial metadata so a client can follow the logs.
        ``should_stop`` (e.g. "the RPC was cancelled") is checked every
        ``STOP_CHECK_S`` and ends the wait, not the run.
        """
        self._check(request)
        if timeout_s is not None and timeout_s <= 0:  # never start a run nobody waits for
            raise DeadlineExceeded("the request's deadline passed before the workflow could start")
        key = request.idempotency_key
        with self._lock:
            self._forget_expired()
            run = self._keys.get(key) if key else None
            if run is not None and run.fingerprint != request.fingerprint():
                raise InvalidArgument.field(
                    "idempotency_key", "was already used for a different request"
                )
            if self._waiting >= 2 * self._max:
                raise self._exhausted("StartWorkflow calls are already waiting", 2 * self._max)
            if run is None and not (key and self._ledger is not None):
                if len(self._running) >= self._max:
                    raise self._exhausted("workflows are already running", self._max)
                run = self._admit(request)
            self._waiting += 1
        try:
            if run is None:  # a key this process has not seen: the ledger decides
                return self._through_ledger(request, timeout_s, on_run_id, should_stop)
            if on_run_id is not None:
                on_run_id(run.run_id)
            self._wait(run, timeout_s, should_stop)
            return run.outcome()
        finally:
            with self._lock:
                self._waiting -= 1

    def _through_ledger(
        self,
        request: WorkflowRequest,
        timeout_s: float | None,
        on_run_id: Callable[[str], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> OrchestratorResult:
        """Claim the key in the shared ledger and run, or follow the run that holds it."""
        assert self._ledger is not None
        key, fingerprint = request.idempotency_key, request.fingerprint()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        run_id = new_run_id()
        held = self._ledger.claim(key, fingerprint, run_id)
        if held is None:  # ours: start it here
            try:
                with self._lock:
                    if len(self._running) >= self._max:
                        raise self._exhausted("workflows are already running", self._max)
                    run = self._admit(request, run_id)
            except BaseException:
                self._release(key, run_id)
                raise
            if on_run_id is not None:
                on_run_id(run.run_id)
            self._wait(run, _left(deadline), should_stop)
            return run.outcome()
        if held.fingerprint != fingerprint:
            raise InvalidArgument.field(
                "idempotency_key", "was already used for a different request"
            )
        if on_run_id is not None:
            on_run_id(held.run_id)
        return self._follow(key, held, deadline, should_stop)

    def _follow(
        self,
        key: str,
        held: Held,
        deadline: float | None,
        should_stop: Callable[[], bool] | None,
    ) -> OrchestratorResult:
        """Wait for a run that another gateway (or an earlier life of this one) started."""
        assert self._ledger is not None
        run_id = held.run_id
        while True:
            with self._lock:
                local = self._running.get(run_id)
            if local is not None:  # it is ours after all (claimed a moment ago)
                self._wait(local, _left(deadline), should_stop)
                return local.outcome()
            if held.outcome is not None:
                return replay(held.outcome)
            if held.claimed_s_ago > self._ledger.abandon_after_s:
                raise WorkflowError(
                    f"run {run_id} never finished: the gateway running it stopped; its logs "
                    "show how far it got, and this idempotency key will not start another run",
                    code=grpc.StatusCode.ABORTED,
                    reason="RUN_ABANDONED",
                    metadata={"run_id": run_id},
                )
            wait_s = self._settings.log_poll_interval_s
            left = _left(deadline)
            if left is not None:
                if left <= 0:
                    raise WorkflowTimeout(
                        f"run {run_id} (started by another gateway) is still running after the "
                        "request's deadline; its logs show its progress",
                        run_id=run_id,
                        run_log=self._logs_so_far(run_id),
                    )
                wait_s = min(wait_s, left)
            self._pause(wait_s, run_id, should_stop)
            current = self._ledger.get(key)
            if current is None or current.run_id != run_id:  # expired or released meanwhile
                raise WorkflowError(
                    f"run {run_id} no longer holds this idempotency key; send the request again",
                    code=grpc.StatusCode.ABORTED,
                    reason="KEY_RELEASED",
                    metadata={"run_id": run_id},
                )
            held = current

    def _pause(self, seconds: float, run_id: str, should_stop: Callable[[], bool] | None) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, STOP_CHECK_S))
            if should_stop is not None and should_stop():
                raise _cancelled(run_id)

    def _release(self, key: str, run_id: str) -> None:
        assert self._ledger is not None
        try:
            self._ledger.release(key, run_id)
        except GatewayError as exc:  # it expires as an abandoned claim instead
            log.warning("could not release idempotency key of run %s: %s", run_id, exc.message)

    def _wait(
        self, run: _Run, timeout_s: float | None, should_stop: Callable[[], bool] | None
    ) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WorkflowTimeout(
                    f"run {run.run_id} is still running after the request's deadline; "
                    "its logs show its progress",
                    run_id=run.run_id,
                    run_log=self._logs_so_far(run.run_id),
                )
            wait_s = remaining
            if should_stop is not None:
                wait_s = STOP_CHECK_S if remaining is None else min(remaining, STOP_CHECK_S)
            if run.done.wait(wait_s):
                return
            if should_stop is not None and should_stop():
                raise _cancelled(run.run_id)

    def _check(self, request: WorkflowRequest) -> None:
        s = self._settings
        if not request.prompt.strip():
            raise InvalidArgument.field("prompt", "must not be empty")
        size = len(request.prompt.encode("utf-8", errors="surrogatepass"))
        if size > s.max_query_bytes:
            raise InvalidArgument.field(
                "prompt", f"is {size} bytes, over the limit of {s.max_query_bytes}"
            )
        if len(request.source_tables) > s.max_table_names:
            raise InvalidArgument.field(
                "source_tables",
                f"at most {s.max_table_names} tables, got {len(request.source_tables)}",
            )
        violations = []
        named = [(f"source_tables[{i}]", t) for i, t in enumerate(request.source_tables)]
        if request.target_table:
            named.append(("target_table", request.target_table))
        for field, name in named:
            try:
                parse_table_name(name)
            except InvalidTableName as exc:
                violations.append(FieldViolation(field, f"{clip(name)!r}: {exc}"))
        if violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in violations)
            raise InvalidArgument(message, violations=violations)
        key = request.idempotency_key
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            raise InvalidArgument.field(
                "idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"
            )
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
            raise InvalidArgument.field("idempotency_key", "must not contain control characters")

    def _exhausted(self, what: str, limit: int) -> ResourceExhausted:
        return ResourceExhausted(
            f"{limit} {what}; try again later",
            reason="WORKFLOWS_EXHAUSTED",
            metadata={"limit": str(limit)},
        )

    def _admit(self, request: WorkflowRequest, run_id: str = "") -> _Run:
        """Take a slot and start the run's thread; called with the lock held."""
        if self._closed:
            raise Unavailable("the gateway is shutting down", reason="SHUTTING_DOWN")
        run_id = run_id or new_run_id()
        run = _Run(run_id, request.fingerprint(), request.idempotency_key)
        self._running[run_id] = run
        if request.idempotency_key:
            self._keys[request.idempotency_key] = run
        thread = threading.Thread(
            target=self._run, args=(run, request.event(run_id)), name=f"workflow-{run_id}"
        )
        thread.daemon = True
        self._threads.add(thread)
        thread.start()
        return run

    def _run(self, run: _Run, event: dict[str, Any]) -> None:
        """The workflow thread: one invocation, its outcome kept for every waiter."""
        started = time.monotonic()
        timeout_s = self._settings.orchestrator_read_timeout_s
        log.info("run %s started", run.run_id)
        try:
            run.result = self.orchestrator.invoke(event, timeout_s=timeout_s)
            outcome = "ok"
        except OrchestratorTimeout as exc:
            run.error = WorkflowTimeout(
                f"{exc}; run {run.run_id} may still be running",
                run_id=run.run_id,
                run_log=self._logs_so_far(run.run_id),
            )
            outcome = "timeout"
        except GatewayError as exc:
            exc.metadata.setdefault("run_id", run.run_id)
            run.error = exc
            outcome = exc.code.name
        except Exception as exc:
            log.exception("run %s: the orchestrator adapter failed", run.run_id)
            run.error = exc
            outcome = "INTERNAL"
        except BaseException as exc:  # SystemExit from a handler: end this thread only
            run.error = RuntimeError(f"the orchestrator ended its thread ({type(exc).__name__})")
            outcome = "INTERNAL"
        finally:
            if run.error is not None:  # kept for replays: drop frames and the chain they hold
                run.error.__traceback__ = None
                run.error.__context__ = None
                run.error.__cause__ = None
            self._record(run)
            with self._lock:
                run.finished_at = time.monotonic()
                self._running.pop(run.run_id, None)
                self._threads.discard(threading.current_thread())
            run.done.set()
            self.log_store.wake(run.run_id)
        log.info("run %s finished: %s in %.1f s", run.run_id, outcome, time.monotonic() - started)

    def _record(self, run: _Run) -> None:
        """The outcome in the ledger, for repeats that reach other gateways."""
        if self._ledger is None or not run.key:
            return
        try:
            self._ledger.finish(run.key, run.run_id, outcome_of(run.result, run.error))
        except Exception:
            log.warning(
                "run %s: could not record its outcome for its key", run.run_id, exc_info=True
            )

    def _logs_so_far(self, run_id: str) -> RunLog | None:
        """For a timeout's details; a log store that fails too must not hide the timeout."""
        try:
            return self.log_store.get(run_id)
        except Exception:
            log.warning("run %s: could not read its logs for a timeout", run_id, exc_info=True)
            return None

    def _forget_expired(self) -> None:
        """Drop keys of runs finished over the TTL ago, then the oldest finished over the cap."""
        now = time.monotonic()
        ttl = self._settings.idempotency_ttl_s
        expired = [
            k
            for k, r in self._keys.items()
            if r.finished_at is not None and now - r.finished_at > ttl
        ]
        for key in expired:
            del self._keys[key]
        excess = len(self._keys) + 1 - self._settings.idempotency_max_keys  # room for one more
        if excess > 0:
            finished = [k for k, r in self._keys.items() if r.finished_at is not None]
            for key in finished[:excess]:
                del self._keys[key]

    # -- logs -------------------------------------------------------------------------

    def get_logs(self, run_id: str) -> RunLog:
        """GetLogs: InvalidArgument for a bad id, NotFound for a run with no log."""
        return self.log_store.require(run_id)

    def is_running(self, run_id: str) -> bool:
        """Whether this gateway is running the run now."""
        with self._lock:
            return run_id in self._running

    def watch(
        self,
        run_id: str,
        *,
        timeout_s: float,
        start: int = 0,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[LogEvent]:
        """WatchLogs: the run's entries as they are written, until the run ends.

        For a run this gateway is running, until its invocation returns (a
        run with no entries yet is waited for); otherwise until its newest
        entry is a success, error or end entry. See ``LogStore.follow``.
        """
        check_run_id(run_id)
        running = self.is_running(run_id)
        return self.log_store.follow(
            run_id,
            timeout_s=timeout_s,
            start=start,
            running=(lambda: self.is_running(run_id)) if running else None,
            should_stop=should_stop,
        )

    # -- lifecycle --------------------------------------------------------------------

    def close(self, timeout_s: float = 0.0) -> None:
        """Refuse new runs, give running ones up to ``timeout_s``, release adapters."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        if any(t.is_alive() for t in threads):
            log.warning("closing with workflows still running; their answers are lost")
        self.orchestrator.close()
        self.log_store.close()
