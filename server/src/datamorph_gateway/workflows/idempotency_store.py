"""The idempotency store: keys that hold across gateway restarts and replicas, in PostgreSQL.

The runner remembers keys in memory, which covers repeats that reach the same process. A
Lambda retrying StartWorkflow through a load balancer may reach another replica, or a
restarted one; this ledger of keys (``IDEMPOTENCY_STORE=postgres``) makes the key hold
there too, so one key still means at most one run. One row per key, in the gateway's schema:

- ``claim`` inserts the key with the run id about to start (``ON CONFLICT DO NOTHING``,
  so of two replicas claiming at once exactly one wins) or returns the row that holds it;
- ``finish`` records the run's outcome (its answer, or its error's code and message),
  which later repeats replay; the first outcome recorded stands;
- ``release`` gives a key back when its run was refused before it started (a limit).

A run whose gateway stopped is ended by another gateway through its lease (see
``leases``), which records its outcome here as abandoned (ABORTED, ``RUN_ABANDONED``), so
repeats answer that at once and never start another run. Rows expire ``ttl_s`` after their
run finished. A row whose run never finished and never had a lease (claimed by a gateway
without leases) is ``stale`` after ``abandon_after_s``: the runner gives it a lapsed lease,
and it is ended like the others (without leases, a repeat answers abandoned from then on).
Unfinished rows expire ``ttl_s`` after that. Expired rows are deleted when their key is
claimed again and, all of them, at start-up.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from datamorph_gateway.db.own_tables import OwnedTables
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.errors import KINDS, GatewayError, Unavailable
from datamorph_gateway.workflows.base import OrchestratorResult, WorkflowError

# The same schema as the PostgreSQL log store.
_DDL = """
CREATE TABLE IF NOT EXISTS datamorph_gateway.idempotency_keys (
    key text PRIMARY KEY,
    fingerprint text NOT NULL,
    run_id text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome json
);
CREATE INDEX IF NOT EXISTS idempotency_keys_unfinished
    ON datamorph_gateway.idempotency_keys (claimed_at) WHERE finished_at IS NULL
"""
# A row that has expired: ``ttl`` after its run finished, or after it became stale.
_EXPIRED = """(finished_at < now() - make_interval(secs => %(ttl)s)
        OR (finished_at IS NULL
            AND claimed_at < now() - make_interval(secs => %(ttl)s + %(abandon)s)))"""
# The row of a run that has not finished, for its key.
_UNFINISHED_RUN = "key = %(key)s AND run_id = %(run_id)s AND finished_at IS NULL"
_EXPIRE = f"DELETE FROM datamorph_gateway.idempotency_keys WHERE key = %(key)s AND {_EXPIRED}"
_PURGE = f"DELETE FROM datamorph_gateway.idempotency_keys WHERE {_EXPIRED}"
_CLAIM = """
INSERT INTO datamorph_gateway.idempotency_keys (key, fingerprint, run_id)
VALUES (%(key)s, %(fingerprint)s, %(run_id)s)
ON CONFLICT (key) DO NOTHING
RETURNING run_id
"""
_STALE = """
SELECT key, run_id, extract(epoch FROM claimed_at)::float8 FROM datamorph_gateway.idempotency_keys
 WHERE finished_at IS NULL AND claimed_at < now() - make_interval(secs => %(abandon)s)
 ORDER BY claimed_at
 LIMIT %(limit)s
"""
_READ = """
SELECT fingerprint, run_id, extract(epoch FROM now() - claimed_at)::float8, outcome::text
  FROM datamorph_gateway.idempotency_keys WHERE key = %(key)s
"""
_FINISH = f"""
UPDATE datamorph_gateway.idempotency_keys SET finished_at = now(), outcome = %(outcome)s::json
 WHERE {_UNFINISHED_RUN}
"""
_RELEASE = f"DELETE FROM datamorph_gateway.idempotency_keys WHERE {_UNFINISHED_RUN}"


@dataclass(frozen=True)
class Held:
    """The row that holds a key: whose run, how long ago, and its outcome once finished."""

    fingerprint: str
    run_id: str
    claimed_s_ago: float
    outcome: dict[str, Any] | None


def outcome_of(result: OrchestratorResult | None, error: BaseException | None) -> dict[str, Any]:
    """What a repeat needs to answer as the run did, as JSON."""
    if error is None:
        assert result is not None
        return {
            "result": {
                "run_id": result.run_id,
                "message": result.message,
                "details": result.details,
            }
        }
    if isinstance(error, GatewayError):
        return {
            "error": {
                "code": error.kind_name,
                "message": error.message,
                "reason": error.reason,
                "metadata": error.metadata,
            }
        }
    internal = {"code": "INTERNAL", "message": "the workflow failed inside the gateway"}
    return {"error": {**internal, "reason": "INTERNAL", "metadata": {}}}


def replay(outcome: dict[str, Any]) -> OrchestratorResult:
    """The recorded answer, or the recorded error raised again."""
    if "result" in outcome:
        r = outcome["result"]
        return OrchestratorResult(r["run_id"], r["message"], dict(r["details"]))
    e = outcome["error"]
    raise WorkflowError(
        e["message"],
        kind=KINDS[e["code"]],
        reason=e["reason"],
        metadata={str(k): str(v) for k, v in e["metadata"].items()},
    )


class Ledger:
    """The ``datamorph_gateway.idempotency_keys`` table, on the pool of the gateway's own
    tables (``RolePools.own_tables``)."""

    def __init__(
        self, pool: ConnectionPool, *, ttl_s: float, abandon_after_s: float, timeout_s: float
    ) -> None:
        self._ttl_s = ttl_s
        self._abandon_after_s = abandon_after_s
        self._tables = OwnedTables(
            pool,
            _DDL,
            timeout_s=timeout_s,
            name="idempotency key table",
            what="datamorph_gateway.idempotency_keys",
            remedy="set IDEMPOTENCY_STORE=memory",
        )

    @property
    def abandon_after_s(self) -> float:
        return self._abandon_after_s

    def ensure_schema(self) -> None:
        """Create the table if missing and drop expired keys; see ``OwnedTables.ensure``.
        (A claim also drops its own key when expired.)"""
        self._tables.ensure(then=self.purge)

    def purge(self) -> int:
        """Delete every expired key; how many."""
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_PURGE, {"ttl": self._ttl_s, "abandon": self._abandon_after_s})
            return int(cur.rowcount)

    def claim(self, key: str, fingerprint: str, run_id: str) -> Held | None:
        """Take ``key`` for ``run_id``; None when taken, else the row that already holds it."""
        params = {
            "key": key,
            "fingerprint": fingerprint,
            "run_id": run_id,
            "ttl": self._ttl_s,
            "abandon": self._abandon_after_s,
        }
        for _ in range(3):
            with self._tables.transaction() as conn, conn.cursor() as cur:
                cur.execute(_EXPIRE, params)
                cur.execute(_CLAIM, params)
                if cur.fetchone() is not None:
                    return None
                cur.execute(_READ, params)
                row = cur.fetchone()
            if row is not None:
                return _held(row)
            # Expired and deleted by another gateway between the two statements: try again.
        raise Unavailable("could not claim the idempotency key; try again", reason="KEY_CONTENDED")

    def get(self, key: str) -> Held | None:
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_READ, {"key": key})
            row = cur.fetchone()
        return None if row is None else _held(row)

    def finish(self, key: str, run_id: str, outcome: dict[str, Any]) -> bool:
        """Record the run's outcome; False when one was recorded already (it stands)."""
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_FINISH, {"key": key, "run_id": run_id, "outcome": json.dumps(outcome)})
            return bool(cur.rowcount)

    def stale(self, limit: int = 100) -> list[tuple[str, str, dt.datetime]]:
        """Keys (with run id and claim time) whose run never finished, claimed over
        ``abandon_after_s`` ago, oldest first."""
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_STALE, {"abandon": self._abandon_after_s, "limit": limit})
            rows = cur.fetchall()
        return [(str(k), str(r), dt.datetime.fromtimestamp(at, dt.UTC)) for k, r, at in rows]

    def release(self, key: str, run_id: str) -> None:
        with self._tables.transaction() as conn, conn.cursor() as cur:
            cur.execute(_RELEASE, {"key": key, "run_id": run_id})


def _held(row: tuple[Any, ...]) -> Held:
    fingerprint, run_id, seconds, outcome = row
    return Held(
        fingerprint, run_id, float(seconds), None if outcome is None else json.loads(outcome)
    )
