"""GetLogs and WatchLogs for the runner: a run's log, and how long following it lasts.

A run id that went out always leads to a log: a run that holds a lease (it is running
somewhere) but has written nothing yet has an empty log, not none. Following a run lasts
while this gateway runs it, or while it holds a lease (another gateway runs it); otherwise
until its newest entry ends it (``LogStore.follow``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator

from datamorph_gateway.errors import GatewayError, NotFound
from datamorph_gateway.logstore import LogEvent, LogStore, RunLog, utc_timestamp
from datamorph_gateway.workflows.leases import RunLeases

log = logging.getLogger(__name__)


class RunLogs:
    """Reads runs' logs from the log store, asking the leases whether a run is running."""

    def __init__(
        self,
        log_store: LogStore,
        leases: RunLeases | None,
        *,
        is_running: Callable[[str], bool],
    ) -> None:
        self._log_store = log_store
        self._leases = leases
        self._is_running = is_running

    def get(self, run_id: str) -> RunLog:
        """GetLogs: InvalidArgument for a bad id, NotFound for a run with no log.

        A run that holds a lease (it is running somewhere) but has no entries yet has an
        empty log: its id went out, so it must not be "not found".
        """
        try:
            return self._log_store.require(run_id)
        except NotFound:
            started = self._lease_started(run_id)
            if started is None:
                raise
            stamp = utc_timestamp(started)
            return RunLog(run_id, [], stamp, stamp)

    def so_far(self, run_id: str) -> RunLog | None:
        """For a timeout's details; a log store that fails too must not hide the timeout."""
        try:
            return self._log_store.get(run_id)
        except Exception:
            log.warning("run %s: could not read its logs for a timeout", run_id, exc_info=True)
            return None

    def watch(
        self, run_id: str, timeout_s: float, start: int, should_stop: Callable[[], bool] | None
    ) -> Iterator[LogEvent]:
        """WatchLogs: the run's entries as they are written, until the run ends.

        For a run this gateway is running, until its invocation returns; for
        one that holds a lease (another gateway runs it), until the lease goes:
        the invocation returned, or the run was ended as abandoned. A run with
        no entries yet is waited for. Otherwise, until its newest entry is a
        success, error or end entry. See ``LogStore.follow``.
        """
        running: Callable[[], bool] | None = None
        if self._is_running(run_id):
            running = lambda: self._is_running(run_id)  # noqa: E731
        elif self._lease_started(run_id) is not None:
            running = lambda: self._leased(run_id)  # noqa: E731
        return self._log_store.follow(
            run_id, timeout_s=timeout_s, start=start, running=running, should_stop=should_stop
        )

    def _lease_started(self, run_id: str) -> dt.datetime | None:
        if self._leases is None:
            return None
        try:
            return self._leases.started_at(run_id)
        except GatewayError as exc:
            log.warning("run %s: could not read its lease: %s", run_id, exc.message)
            return None

    def _leased(self, run_id: str) -> bool:
        """For following a run another gateway runs; one that cannot tell keeps following."""
        assert self._leases is not None
        try:
            return self._leases.is_held(run_id)
        except GatewayError:
            return True
