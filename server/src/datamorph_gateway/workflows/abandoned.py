"""Ending runs whose gateway stopped, on the lease reaper's thread (``RunLeases.start``).

A lapsed lease's run gets error and end entries in its log (``endings``), then its
idempotency key the outcome ABORTED (``RUN_ABANDONED``), which repeats replay at once. With
an idempotency store, keys whose run never finished nor held a lease (claimed by a gateway
without leases) are given a lapsed lease first, so they are ended the same way.
docs/operations.md, "Abandoned runs", has the whole design.
"""

from __future__ import annotations

import logging
import time

from datamorph_gateway.errors import FailedPrecondition
from datamorph_gateway.logstore import LogStore, utc_timestamp
from datamorph_gateway.observability import metrics
from datamorph_gateway.workflows.endings import (
    ABANDONED,
    abandoned_entries,
    abandoned_error,
    ended_as_abandoned,
)
from datamorph_gateway.workflows.idempotency_store import Ledger, outcome_of
from datamorph_gateway.workflows.leases import Lapsed, RunLeases

log = logging.getLogger(__name__)

ADOPT_EVERY_S = 60.0


class AbandonedRuns:
    """``end`` each lapsed lease's run; ``adopt_stale`` keys that never had a lease."""

    def __init__(self, log_store: LogStore, leases: RunLeases, ledger: Ledger | None) -> None:
        self._log_store = log_store
        self._leases = leases
        self._ledger = ledger
        self._adopted_at: float | None = None

    def end(self, lapsed: Lapsed) -> None:
        """End a run whose gateway stopped: error and end entries, then the key's outcome.

        Raises when the log cannot be written for now, so the lease lapses again and the
        run is ended later; a log store that refuses for good (misconfigured) is logged and
        passed over, since the key must not wait for ever.
        """
        key = lapsed.idempotency_key if self._ledger is not None else None
        if key is not None:
            assert self._ledger is not None
            held = self._ledger.get(key)
            outcome = held.outcome if held is not None and held.run_id == lapsed.run_id else None
            if outcome is not None and outcome.get("error", {}).get("reason") != ABANDONED:
                log.info("run %s: finished before its gateway stopped", lapsed.run_id)
                return
        try:
            if not ended_as_abandoned(self._log_store.get(lapsed.run_id)):
                for entry in abandoned_entries(
                    lapsed, lease_s=self._leases.lease_s, ended_by=self._leases.holder
                ):
                    self._log_store.append(lapsed.run_id, entry)
        except FailedPrecondition as exc:
            log.error("run %s: abandoned, but its log cannot be written: %s", lapsed.run_id, exc)
        if key is not None:
            assert self._ledger is not None
            self._ledger.finish(key, lapsed.run_id, outcome_of(None, abandoned_error(lapsed)))
        metrics.workflow_abandoned()
        log.warning(
            "run %s ended as abandoned: its gateway %s was last heard from at %s",
            lapsed.run_id,
            lapsed.gateway or "(kept no lease)",
            utc_timestamp(lapsed.renewed_at),
        )

    def adopt_stale(self) -> None:
        """Keys whose run never finished nor held a lease get a lapsed one, to be ended.

        At most every ``ADOPT_EVERY_S``: they are stale only after ``abandon_after_s``
        (ORCHESTRATOR_READ_TIMEOUT_S + 60 s), so looking more often gains little.
        """
        assert self._ledger is not None
        now = time.monotonic()
        if self._adopted_at is not None and now - self._adopted_at < ADOPT_EVERY_S:
            return
        self._adopted_at = now
        for key, run_id, claimed_at in self._ledger.stale():
            self._leases.adopt(run_id, key, claimed_at)
