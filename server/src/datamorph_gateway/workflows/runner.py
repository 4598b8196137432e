"""StartWorkflow's engine: run ids, at-most-once invocation, a concurrency bound, the run thread.

Each admitted workflow runs on a thread of its own (at most
``workflow_max_concurrent`` at once), so the RPC thread that asked can stop
waiting at its deadline while the workflow goes on. The threads are daemons:
a shutdown is not held up by a 15-minute Lambda call (which goes on in AWS
and still writes its logs).

Limits answer RESOURCE_EXHAUSTED at once, never queue: ``workflow_max_concurrent``
running workflows, or twice that many StartWorkflow calls already waiting for
answers (a retry may wait beside the call it retries), so that StartWorkflow
never holds every RPC thread. With leases the running workflows are counted on
every gateway process and replica together (their leases, under a lock in the
database); without, in this process.

A repeat with the same idempotency key gets the first run's answer or error,
waiting for it if the run is still going (``runs``), and never starts another;
a repeat with the same key but a different request is INVALID_ARGUMENT. A key
is only taken once its run is admitted, so a request refused by a limit or by
validation can be retried with the same key. Keys are remembered in this
process and, with ``IDEMPOTENCY_STORE=postgres`` (the default), claimed in the
idempotency store first, so that they hold across restarts and replicas
(``idempotency``).

With ``RunLeases`` (``RUN_LEASE_S`` > 0, the default) every run holds a lease while
it is invoked, taken before its run id is handed out. A run whose gateway stopped is
ended by another (``abandoned``). A failed run's log is made to end too (``endings``):
a run id in an answer always leads to a log that GetLogs finds (``run_logs``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from datamorph_gateway.config import WorkflowSettings
from datamorph_gateway.errors import DeadlineExceeded, GatewayError, ResourceExhausted, Unavailable
from datamorph_gateway.logstore import LogEvent, LogStore, RunLog
from datamorph_gateway.observability import metrics
from datamorph_gateway.workflows.abandoned import AbandonedRuns
from datamorph_gateway.workflows.base import (
    Orchestrator,
    OrchestratorResult,
    OrchestratorTimeout,
    WorkflowTimeout,
)
from datamorph_gateway.workflows.endings import failure_entries, has_ended
from datamorph_gateway.workflows.idempotency import KeyMemory, SharedKeys, key_reused
from datamorph_gateway.workflows.idempotency_store import Ledger
from datamorph_gateway.workflows.leases import AtCapacity, RunLeases
from datamorph_gateway.workflows.run_logs import RunLogs
from datamorph_gateway.workflows.runs import Run, WorkflowRequest, new_run_id, time_left, wait_for

log = logging.getLogger(__name__)

# How a run ended (the outcome _run logs) as the metric names it; any other is an error.
_FINISHED: dict[str, metrics.Finished] = {"ok": "success", "timeout": "timeout"}


class WorkflowRunner:
    """Starts workflows on the orchestrator and reads their logs; owns both."""

    def __init__(
        self,
        settings: WorkflowSettings,
        orchestrator: Orchestrator,
        log_store: LogStore,
        ledger: Ledger | None = None,
        *,
        leases: RunLeases | None = None,
    ) -> None:
        self._settings = settings
        self.orchestrator = orchestrator
        self.log_store = log_store
        self._ledger = ledger
        self._leases = leases
        self._max = settings.workflow_max_concurrent
        self._lock = threading.Lock()
        self._running: dict[str, Run] = {}
        self._waiting = 0
        self._keys = KeyMemory(
            ttl_s=settings.idempotency_ttl_s, max_keys=settings.idempotency_max_keys
        )
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._logs = RunLogs(log_store, leases, is_running=self.is_running)
        self._shared: SharedKeys | None = None
        if ledger is not None:
            self._shared = SharedKeys(
                ledger,
                leases,
                poll_interval_s=settings.log_poll_interval_s,
                local_run=self._local_run,
                logs_so_far=self._logs.so_far,
            )
        if leases is not None:
            abandoned = AbandonedRuns(log_store, leases, ledger)
            leases.start(abandoned.end, before=abandoned.adopt_stale if ledger else None)

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
        if timeout_s is not None and timeout_s <= 0:  # never start a run nobody waits for
            raise DeadlineExceeded("the request's deadline passed before the workflow could start")
        key = request.idempotency_key
        with self._lock:
            self._keys.expire()
            run = self._keys.get(key) if key else None
            if run is not None and run.fingerprint != request.fingerprint():
                raise key_reused()
            if self._waiting >= 2 * self._max:
                raise self._exhausted("StartWorkflow calls are already waiting", 2 * self._max)
            admitted = run is None and not (key and self._shared is not None)
            if admitted:
                if len(self._running) >= self._max:
                    raise self._exhausted("workflows are already running", self._max)
                run = self._admit(request)
            self._waiting += 1
        try:
            if run is None:  # a key this process has not seen: the idempotency store decides
                return self._through_store(request, timeout_s, on_run_id, should_stop)
            if admitted:
                self._launch(run)
            else:  # joined: the call that admitted it launches it
                run.ready.wait()
            if on_run_id is not None and run.launched:
                on_run_id(run.run_id)
            wait_for(run, timeout_s, should_stop, self._logs.so_far)
            return run.outcome()
        finally:
            with self._lock:
                self._waiting -= 1

    def _through_store(
        self,
        request: WorkflowRequest,
        timeout_s: float | None,
        on_run_id: Callable[[str], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> OrchestratorResult:
        """Claim the key in the idempotency store and run, or follow the run that holds it."""
        assert self._shared is not None
        key, fingerprint = request.idempotency_key, request.fingerprint()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        run_id = new_run_id()
        held = self._shared.claim(key, fingerprint, run_id)
        if held is None:  # ours: start it here
            try:
                with self._lock:
                    if len(self._running) >= self._max:
                        raise self._exhausted("workflows are already running", self._max)
                    run = self._admit(request, run_id)
                self._launch(run)
            except BaseException:
                self._shared.release(key, run_id)
                raise
            if on_run_id is not None:
                on_run_id(run.run_id)
            wait_for(run, time_left(deadline), should_stop, self._logs.so_far)
            return run.outcome()
        if held.fingerprint != fingerprint:
            raise key_reused()
        return self._shared.follow(key, held, deadline, should_stop, on_run_id)

    def _local_run(self, run_id: str) -> Run | None:
        with self._lock:
            return self._running.get(run_id)

    def _exhausted(self, what: str, limit: int) -> ResourceExhausted:
        metrics.workflow_refused()
        return ResourceExhausted(
            f"{limit} {what}; try again later",
            reason="WORKFLOWS_EXHAUSTED",
            metadata={"limit": str(limit)},
        )

    def _admit(self, request: WorkflowRequest, run_id: str = "") -> Run:
        """Take a slot (and the key, in memory); called with the lock held. ``_launch`` next."""
        if self._closed:
            raise Unavailable("the gateway is shutting down", reason="SHUTTING_DOWN")
        run_id = run_id or new_run_id()
        run = Run(run_id, request.fingerprint(), request.idempotency_key)
        run.event = request.event(run_id)
        self._running[run_id] = run
        self._keys.remember(run)
        return run

    def _launch(self, run: Run) -> None:
        """Take the run's lease, then start its thread; without a lease, the run is refused.

        Called without the lock: the lease is a database statement. Callers that joined
        the run meanwhile wait on ``run.ready`` and get the refusal too.
        """
        leased = False
        try:
            if self._leases is not None:
                try:
                    self._leases.take(run.run_id, run.key or None, at_most=self._max)
                except AtCapacity:
                    raise self._exhausted(
                        "workflows are already running on the gateways together", self._max
                    ) from None
                except GatewayError as exc:
                    raise Unavailable(
                        f"the workflow was not started: its lease could not be recorded "
                        f"({exc.message}); try again",
                        reason="LEASE_UNAVAILABLE",
                    ) from None
                leased = True
            thread = threading.Thread(target=self._run, args=(run,), name=f"workflow-{run.run_id}")
            thread.daemon = True
            with self._lock:
                if self._closed:
                    raise Unavailable("the gateway is shutting down", reason="SHUTTING_DOWN")
                self._threads.add(thread)
            thread.start()
            run.launched = True
        except BaseException as exc:
            if leased:
                assert self._leases is not None
                self._leases.release(run.run_id)
            with self._lock:
                run.finished_at = time.monotonic()
                self._running.pop(run.run_id, None)
                self._keys.forget(run)  # refused before it started: the key is free
            run.error = exc
            run.done.set()
            raise
        finally:
            run.ready.set()

    # -- the workflow thread ----------------------------------------------------------

    def _run(self, run: Run) -> None:
        """The workflow thread: one invocation, its outcome kept for every waiter."""
        event, run.event = run.event, {}
        started = time.monotonic()
        timeout_s = self._settings.orchestrator_read_timeout_s
        log.info("run %s started", run.run_id)
        metrics.workflow_started()
        outcome = "INTERNAL"
        try:
            run.result = self.orchestrator.invoke(event, timeout_s=timeout_s)
            outcome = "ok"
        except OrchestratorTimeout as exc:
            run.error = WorkflowTimeout(
                f"{exc}; run {run.run_id} may still be running",
                run_id=run.run_id,
                run_log=self._logs.so_far(run.run_id),
            )
            outcome = "timeout"
        except GatewayError as exc:
            exc.metadata.setdefault("run_id", run.run_id)
            run.error = exc
            outcome = exc.kind_name
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
                self._log_failure(run, run.error)
            recorded = self._shared.record(run) if self._shared is not None else None
            if self._leases is not None:  # after the log and the key: the run is over
                self._leases.release(run.run_id)
            with self._lock:
                run.finished_at = time.monotonic()
                self._running.pop(run.run_id, None)
                self._threads.discard(threading.current_thread())
                if recorded is False:
                    # Ended as abandoned meanwhile (this gateway lost its lease): repeats
                    # answer what the idempotency store says, as on every other gateway.
                    self._keys.forget(run)
            run.done.set()
            self.log_store.wake(run.run_id)
            metrics.workflow_finished(_FINISHED.get(outcome, "error"))
        log.info("run %s finished: %s in %.1f s", run.run_id, outcome, time.monotonic() - started)

    def _log_failure(self, run: Run, error: BaseException) -> None:
        """A failed run's answer carries its run id: its log must exist and end."""
        run_id = run.run_id
        if isinstance(error, GatewayError):
            run_id = error.metadata.get("run_id", run_id)
        try:
            if not has_ended(self.log_store.get(run_id)):
                for entry in failure_entries(error):
                    self.log_store.append(run_id, entry)
        except Exception as exc:
            log.warning("run %s: could not write its failure to its log: %s", run_id, exc)

    # -- logs -------------------------------------------------------------------------

    def get_logs(self, run_id: str) -> RunLog:
        """GetLogs: see ``RunLogs.get``."""
        return self._logs.get(run_id)

    def watch(
        self,
        run_id: str,
        *,
        timeout_s: float,
        start: int = 0,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[LogEvent]:
        """WatchLogs: see ``RunLogs.watch``."""
        return self._logs.watch(run_id, timeout_s, start, should_stop)

    def is_running(self, run_id: str) -> bool:
        """Whether this gateway is running the run now."""
        with self._lock:
            return run_id in self._running

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
            log.warning(
                "closing with workflows still running; their answers are lost, and their "
                "leases lapse: another gateway ends them as abandoned"
            )
        if self._leases is not None:
            self._leases.close()
        self.orchestrator.close()
        self.log_store.close()
