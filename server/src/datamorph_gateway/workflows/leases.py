"""Leases on running workflows: how a gateway that stopped is noticed, and its runs ended.

A gateway holds a lease on every run it is executing: a row in
``datamorph_gateway.run_leases``, taken before the orchestrator is invoked, renewed while
the invocation lasts and deleted when it returns. A gateway that stops (SIGKILL, a crash, its
host lost) stops renewing; every live gateway looks for leases that lapsed and ends those runs
(the runner writes their error and end entries and marks their idempotency key abandoned).
docs/operations.md, "Abandoned runs", has the whole design. Timing, with L = RUN_LEASE_S, all
of it on the database's clock (``now()``), so clocks that differ between hosts do not matter:

- a lease lapses 3L/4 after its last renewal; its gateway renews all its leases every L/4 in
  one statement, on a thread of its own, so two renewals in a row may fail without loss;
- every gateway looks for lapsed leases every L/8 to L/4 (jittered), so a run whose gateway
  stopped is ended at most L after its last renewal.

Ending is at least once, never zero times: the gateway that finds a lapsed lease takes it
over (``FOR UPDATE SKIP LOCKED``, so one gateway at a time, and for another 3L/4) and deletes
it only once the run is ended; if it stops in between, the lease lapses again and another
gateway ends the run. A gateway never ends its own runs: its leases lapsed only because it
could not renew them, and it renews them again once it can.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from datamorph_gateway.db.own_tables import OwnedTables
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.errors import GatewayError, Unavailable

log = logging.getLogger(__name__)
# Jitter from a generator of our own: the module-level one is the application's (and
# property tests notice when a background thread draws from it).
_jitter = random.Random()  # noqa: S311

# The same schema as the log store's and the ledger's tables.
_DDL = """
CREATE TABLE IF NOT EXISTS datamorph_gateway.run_leases (
    run_id text PRIMARY KEY,
    gateway text NOT NULL,
    holder text NOT NULL,
    idempotency_key text,
    started_at timestamptz NOT NULL DEFAULT now(),
    renewed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS run_leases_expires_at ON datamorph_gateway.run_leases (expires_at);
"""
_TAKE = """
INSERT INTO datamorph_gateway.run_leases
    (run_id, gateway, holder, idempotency_key, started_at, renewed_at, expires_at)
VALUES (%(run_id)s, %(me)s, %(me)s, %(key)s, now(), now(),
        now() + make_interval(secs => %(ttl)s))
"""
# Runs that are running now, on every gateway: leases renewed by the gateway that took them
# (not lapsed, not taken over to be ended). Counted under _SLOTS_LOCK_KEY, so that two
# gateways taking the last slot at once are one after the other.
_RUNNING = """
SELECT count(*) FROM datamorph_gateway.run_leases WHERE holder = gateway AND expires_at >= now()
"""
_SLOTS_LOCK_KEY = 0x444D_4757_534C_4F54  # "DMGWSLOT"
_RENEW = """
UPDATE datamorph_gateway.run_leases
   SET renewed_at = now(), expires_at = now() + make_interval(secs => %(ttl)s)
 WHERE holder = %(me)s AND gateway = %(me)s AND run_id = ANY(%(runs)s)
RETURNING run_id
"""
_RELEASE = """
DELETE FROM datamorph_gateway.run_leases WHERE holder = %(me)s AND run_id = ANY(%(runs)s)
"""
# Takes lapsed leases of other gateways over; ``retried``: another gateway took it over
# before and stopped before ending the run.
_CLAIM = """
WITH lapsed AS (
    SELECT run_id, holder FROM datamorph_gateway.run_leases
     WHERE expires_at < now() AND gateway <> %(me)s
     ORDER BY expires_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE datamorph_gateway.run_leases AS l
   SET holder = %(me)s, expires_at = now() + make_interval(secs => %(ttl)s)
  FROM lapsed
 WHERE l.run_id = lapsed.run_id
RETURNING l.run_id, l.gateway, l.idempotency_key, extract(epoch FROM l.started_at)::float8,
          extract(epoch FROM l.renewed_at)::float8, lapsed.holder <> l.gateway
"""
# A run that never had a lease (see ``adopt``), as a lease that has already lapsed.
_ADOPT = """
INSERT INTO datamorph_gateway.run_leases
    (run_id, gateway, holder, idempotency_key, started_at, renewed_at, expires_at)
SELECT %(run_id)s, '', '', %(key)s, since, since, since FROM to_timestamp(%(since)s) AS since
ON CONFLICT (run_id) DO NOTHING
"""
# Epoch seconds: the pool decodes timestamps to text, for callers' results.
_STARTED = """
SELECT extract(epoch FROM started_at)::float8 FROM datamorph_gateway.run_leases
 WHERE run_id = %s
"""
CLAIM_BATCH = 20


def _utc(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)


def new_holder_id() -> str:
    """Which gateway process holds a lease: host and pid for operators, and random for
    uniqueness (pids are reused, and a test runs several gateways in one process)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


class AtCapacity(Exception):
    """As many runs as allowed are running on all gateways together: this one may not start."""

    def __init__(self, running: int) -> None:
        super().__init__(f"{running} runs are running")
        self.running = running


@dataclass(frozen=True)
class Lapsed:
    """A run whose gateway stopped renewing its lease, now held by this gateway to end it."""

    run_id: str
    gateway: str
    """The holder id of the gateway that ran it; "" when it kept no lease (``adopt``)."""
    idempotency_key: str | None
    started_at: dt.datetime
    renewed_at: dt.datetime
    """Its gateway's last renewal: the last moment it was known to be alive."""
    retried: bool
    """Another gateway took it over before, and stopped before ending it."""


class RunLeases:
    """This gateway's leases in ``datamorph_gateway.run_leases``, their renewal, and the
    search for other gateways' lapsed ones. ``start`` runs both on threads of their own."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        lease_s: float,
        timeout_s: float,
        holder: str | None = None,
    ) -> None:
        self.lease_s = lease_s
        self.holder = holder or new_holder_id()
        self.ttl_s = lease_s * 3 / 4
        self.interval_s = lease_s / 4
        owned = {
            "name": "run lease table",
            "what": "datamorph_gateway.run_leases",
            "remedy": "set RUN_LEASE_S=0",
        }
        self._tables = OwnedTables(pool, _DDL, timeout_s=timeout_s, **owned)
        # The heartbeat's statements: a renewal must not outlast the next one.
        self._beats = OwnedTables(pool, _DDL, timeout_s=min(timeout_s, self.interval_s), **owned)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._releasing: set[str] = set()  # done, but the delete failed: renewed until it works
        self._renewed_at = time.monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def ensure_schema(self) -> None:
        """Create the table if missing; see ``OwnedTables.ensure``."""
        self._tables.ensure()

    # -- this gateway's runs ------------------------------------------------------------

    def take(self, run_id: str, key: str | None, *, at_most: int | None = None) -> None:
        """Hold a lease on a run about to start; raises ``GatewayError`` if it cannot.

        ``at_most``: the run starts only if fewer runs than that are running on all
        gateways together (WORKFLOW_MAX_CONCURRENT); else ``AtCapacity``, and no lease.
        """
        params = {"run_id": run_id, "me": self.holder, "key": key or None, "ttl": self.ttl_s}
        with self._tables.transaction() as conn, conn.cursor() as cur:
            if at_most is not None:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SLOTS_LOCK_KEY,))
                cur.execute(_RUNNING)
                row = cur.fetchone()
                running = int(row[0]) if row is not None else 0
                if running >= at_most:
                    raise AtCapacity(running)
            cur.execute(_TAKE, params)
        with self._lock:
            if not self._held and not self._releasing:
                self._renewed_at = time.monotonic()
            self._held.add(run_id)

    def release(self, run_id: str) -> None:
        """The run is over: delete its lease. Never raises; a failed delete is tried again
        with each renewal, and the lease is renewed meanwhile, so it cannot lapse."""
        with self._lock:
            self._held.discard(run_id)
            self._releasing.add(run_id)
        self._release_pending()

    def _release_pending(self) -> None:
        with self._lock:
            runs = sorted(self._releasing)
        if not runs:
            return
        try:
            with self._beats.transaction() as conn, conn.cursor() as cur:
                cur.execute(_RELEASE, {"me": self.holder, "runs": runs})
        except GatewayError as exc:
            log.warning("could not delete the leases of %d finished runs: %s", len(runs), exc)
            return
        with self._lock:
            self._releasing.difference_update(runs)

    def renew(self) -> set[str]:
        """Renew every lease this gateway holds, in one statement; the run ids it lost.

        A lease is lost when it lapsed and another gateway took it over: this gateway
        could not renew it for 3L/4, and the run was ended as abandoned while it went on.
        """
        self._release_pending()
        with self._lock:
            runs = self._held | self._releasing
        if not runs:
            return set()
        try:
            with self._beats.transaction() as conn, conn.cursor() as cur:
                cur.execute(_RENEW, {"me": self.holder, "runs": sorted(runs), "ttl": self.ttl_s})
                renewed = {row[0] for row in cur.fetchall()}
        except GatewayError as exc:
            with self._lock:
                silent_s = time.monotonic() - self._renewed_at
            log.warning(
                "could not renew the leases of %d runs (last renewed %.1f s ago; they lapse "
                "after %g s): %s",
                len(runs),
                silent_s,
                self.ttl_s,
                exc,
            )
            return set()
        with self._lock:
            self._renewed_at = time.monotonic()
            # A run released meanwhile is no longer held: its lease was deleted, not lost.
            lost = (runs - renewed) & self._held
            self._held -= lost
            self._releasing -= runs - renewed  # deleted, or taken over after it finished
        for run_id in sorted(lost):
            log.error(
                "run %s: its lease lapsed (this gateway could not renew it for %g s) and "
                "another gateway ended the run as abandoned while it still runs here",
                run_id,
                self.ttl_s,
            )
        return lost

    # -- other gateways' runs -------------------------------------------------------------

    def is_held(self, run_id: str) -> bool:
        """Whether the run holds a lease: some gateway is running it, or ending it."""
        return self.started_at(run_id) is not None

    def started_at(self, run_id: str) -> dt.datetime | None:
        """When the run's lease was taken; None when it holds none."""
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_STARTED, (run_id,))
            row = cur.fetchone()
        return None if row is None else _utc(row[0])

    def claim_lapsed(self, limit: int = CLAIM_BATCH) -> list[Lapsed]:
        """Take over up to ``limit`` lapsed leases of other gateways, to end their runs."""
        params = {"me": self.holder, "limit": limit, "ttl": self.ttl_s}
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_CLAIM, params)
            rows = cur.fetchall()
        return [Lapsed(r[0], r[1], r[2], _utc(r[3]), _utc(r[4]), bool(r[5])) for r in rows]

    def ended(self, run_id: str) -> None:
        """A claimed run is ended: its lease goes."""
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_RELEASE, {"me": self.holder, "runs": [run_id]})

    def adopt(self, run_id: str, key: str, since: dt.datetime) -> None:
        """A lapsed lease for a run that never had one (its key was claimed by a gateway that
        kept no leases, and never finished), so that it is ended like the others."""
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_ADOPT, {"run_id": run_id, "key": key, "since": since.timestamp()})

    def reap(self, end: Callable[[Lapsed], None]) -> int:
        """Claim lapsed leases and ``end`` each run; how many were ended.

        A run ``end`` fails to end keeps its lease, which lapses again: it is tried later.
        """
        done = 0
        for lapsed in self.claim_lapsed():
            try:
                end(lapsed)
                self.ended(lapsed.run_id)
            except Exception as exc:
                log.warning(
                    "run %s: could not end it as abandoned yet, tried again in %g s: %s",
                    lapsed.run_id,
                    self.ttl_s,
                    exc,
                )
                continue
            done += 1
        return done

    # -- the threads ----------------------------------------------------------------------

    def start(
        self, end: Callable[[Lapsed], None], before: Callable[[], None] | None = None
    ) -> None:
        """Renew on one thread; on another, ``before`` (if given) then ``reap(end)``.

        Two threads, so that ending a run (writes to DynamoDB, with retries) never delays a
        renewal.
        """
        self._threads = [
            threading.Thread(target=self._heartbeat, name="run-lease-heartbeat", daemon=True),
            threading.Thread(
                target=self._reaper, args=(end, before), name="run-lease-reaper", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renew()
            except Exception:
                log.exception("renewing run leases failed")

    def _reaper(self, end: Callable[[Lapsed], None], before: Callable[[], None] | None) -> None:
        # Jittered, so gateways started together do not all look at once.
        while not self._stop.wait(self.interval_s * _jitter.uniform(0.5, 1.0)):
            for step in (before, lambda: self.reap(end)):
                if step is None:
                    continue
                try:
                    step()
                except Unavailable as exc:  # the pool said so already, once
                    log.debug("looking for abandoned runs failed: %s", exc)
                except GatewayError as exc:
                    log.warning("looking for abandoned runs failed: %s", exc)
                except Exception:
                    log.exception("looking for abandoned runs failed")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop both threads. Leases of runs still going stay, and lapse if this process ends."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
