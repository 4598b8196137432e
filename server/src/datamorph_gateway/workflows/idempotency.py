"""Idempotency keys in the runner: the keys this process remembers, and those every gateway sees.

``KeyMemory`` holds the keys of this process's runs, for ``idempotency_ttl_s`` after the run
ends and at most ``idempotency_max_keys`` of them (oldest finished first out): a repeat that
reaches this process joins the run, or gets its answer or error.

``SharedKeys`` puts a key this process has not seen through the idempotency store
(``idempotency_store``, ``IDEMPOTENCY_STORE=postgres``): the key is claimed there first, so it
also holds across restarts and replicas. A repeat that reaches another gateway follows the run
by polling the store, then replays its recorded answer or error.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from datamorph_gateway.errors import Aborted, DeadlineExceeded, GatewayError, InvalidArgument
from datamorph_gateway.logstore import RunLog
from datamorph_gateway.workflows.base import OrchestratorResult, WorkflowError, WorkflowTimeout
from datamorph_gateway.workflows.endings import ABANDONED
from datamorph_gateway.workflows.idempotency_store import Held, Ledger, outcome_of, replay
from datamorph_gateway.workflows.leases import RunLeases
from datamorph_gateway.workflows.runs import Run, pause, time_left, wait_for

log = logging.getLogger(__name__)


def key_reused() -> InvalidArgument:
    """A repeat with the key of a different request."""
    return InvalidArgument.field("idempotency_key", "was already used for a different request")


class KeyMemory:
    """The keys of this process's runs; called with the runner's lock held."""

    def __init__(self, *, ttl_s: float, max_keys: int) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._runs: OrderedDict[str, Run] = OrderedDict()

    def get(self, key: str) -> Run | None:
        return self._runs.get(key)

    def remember(self, run: Run) -> None:
        if run.key:
            self._runs[run.key] = run

    def forget(self, run: Run) -> None:
        """Free the run's key, unless another run holds it by now."""
        if run.key and self._runs.get(run.key) is run:
            del self._runs[run.key]

    def expire(self) -> None:
        """Drop keys of runs finished over the TTL ago, then the oldest finished over the cap."""
        now = time.monotonic()
        expired = [
            k
            for k, r in self._runs.items()
            if r.finished_at is not None and now - r.finished_at > self._ttl_s
        ]
        for key in expired:
            del self._runs[key]
        excess = len(self._runs) + 1 - self._max_keys  # room for one more
        if excess > 0:
            finished = [k for k, r in self._runs.items() if r.finished_at is not None]
            for key in finished[:excess]:
                del self._runs[key]


class SharedKeys:
    """Keys in the idempotency store: claimed, released, their outcomes recorded, followed."""

    def __init__(
        self,
        ledger: Ledger,
        leases: RunLeases | None,
        *,
        poll_interval_s: float,
        local_run: Callable[[str], Run | None],
        logs_so_far: Callable[[str], RunLog | None],
    ) -> None:
        self._ledger = ledger
        self._leases = leases
        self._poll_interval_s = poll_interval_s
        self._local_run = local_run
        self._logs_so_far = logs_so_far

    def claim(self, key: str, fingerprint: str, run_id: str) -> Held | None:
        """None when the key is now ``run_id``'s, else the row of the run that holds it."""
        return self._ledger.claim(key, fingerprint, run_id)

    def release(self, key: str, run_id: str) -> None:
        """Give back the key of a run refused before it started."""
        try:
            self._ledger.release(key, run_id)
        except GatewayError as exc:  # it expires as an abandoned claim instead
            log.warning("could not release idempotency key of run %s: %s", run_id, exc.message)

    def record(self, run: Run) -> bool | None:
        """The outcome in the ledger, for repeats that reach other gateways; False when
        another outcome was recorded first (the run was ended as abandoned)."""
        if not run.key:
            return None
        try:
            recorded = self._ledger.finish(run.key, run.run_id, outcome_of(run.result, run.error))
        except Exception:
            log.warning(
                "run %s: could not record its outcome for its key", run.run_id, exc_info=True
            )
            return None
        if not recorded:
            log.warning(
                "run %s finished after it was ended as abandoned; its key keeps answering "
                "RUN_ABANDONED",
                run.run_id,
            )
        return recorded

    def follow(
        self,
        key: str,
        held: Held,
        deadline: float | None,
        should_stop: Callable[[], bool] | None,
        on_run_id: Callable[[str], None] | None,
    ) -> OrchestratorResult:
        """Wait for a run that another gateway (or an earlier life of this one) started.

        Its run id goes to ``on_run_id`` only once the run is seen to have started (it
        holds a lease, or finished): a key's holder may still be refused before it starts.
        """
        run_id = held.run_id
        announced = False
        while True:
            local = self._local_run(run_id)
            if local is not None:  # it is ours after all (claimed a moment ago)
                local.ready.wait()
                if on_run_id is not None and local.launched and not announced:
                    on_run_id(run_id)
                wait_for(local, time_left(deadline), should_stop, self._logs_so_far)
                return local.outcome()
            if not announced and (held.outcome is not None or self._has_started(run_id)):
                announced = True
                if on_run_id is not None:
                    on_run_id(run_id)
            if held.outcome is not None:
                return replay(held.outcome)
            if self._leases is None and held.claimed_s_ago > self._ledger.abandon_after_s:
                # Without leases, nothing ends the run: a repeat stops waiting for it.
                raise WorkflowError(
                    f"run {run_id} never finished: the gateway running it stopped; its logs "
                    "show how far it got, and this idempotency key will not start another run",
                    kind=Aborted,
                    reason=ABANDONED,
                    metadata={"run_id": run_id},
                )
            wait_s = self._poll_interval_s
            left = time_left(deadline)
            if left is not None:
                if left <= 0:
                    if not announced:
                        raise DeadlineExceeded(
                            "the run holding this idempotency key (claimed by another gateway) "
                            "had not started by the request's deadline; send the request again"
                        )
                    raise WorkflowTimeout(
                        f"run {run_id} (started by another gateway) is still running after the "
                        "request's deadline; its logs show its progress",
                        run_id=run_id,
                        run_log=self._logs_so_far(run_id),
                    )
                wait_s = min(wait_s, left)
            pause(wait_s, run_id, should_stop)
            current = self._ledger.get(key)
            if current is None or current.run_id != run_id:  # expired or released meanwhile
                raise WorkflowError(
                    f"{f'run {run_id}' if announced else 'the run that held it'} no longer "
                    "holds this idempotency key; send the request again",
                    kind=Aborted,
                    reason="KEY_RELEASED",
                    # A run released before it started has no log: its id leads nowhere.
                    metadata={"run_id": run_id} if announced else {},
                )
            held = current

    def _has_started(self, run_id: str) -> bool:
        """Whether a run another gateway holds the key for has started (holds a lease).
        Without leases there is no telling: taken as started, as before leases."""
        if self._leases is None:
            return True
        try:
            return self._leases.is_held(run_id)
        except GatewayError as exc:
            log.warning("run %s: could not read its lease: %s", run_id, exc.message)
            return False
