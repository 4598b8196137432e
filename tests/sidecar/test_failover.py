"""Failover: one Envoy in front of two gateway processes on one database, and faults.

Real parts only: `python -m datamorph_gateway` children killed with SIGKILL or stopped with
SIGTERM, a real Envoy with both as upstreams, a real PostgreSQL. Envoy checks health every
HEALTH_CHECK_INTERVAL_S here, so every wait is short and bounded. Each test prints its
figures (`pytest -s` shows them).

What is proved: a read load loses no request when a process dies or when both are
restarted one after the other, and a restarted process gets calls again within
BACK_WITHIN_S; a StartWorkflow or a writing ExecuteQuery whose process dies mid-call, or
before it answered, is not sent to the other one (the caller gets the error; the work ran
once, or nowhere).
"""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest

from datamorph_gateway.sidecar import SidecarOptions

from ..fixtures.envoy import Response, Sidecar, running_envoy
from ..fixtures.gateway import SIDECAR_SECRET
from ..fixtures.handlers import HANDLER, prompt
from ..fixtures.load import Load
from ..fixtures.process import Restartable, gateway_env
from ..fixtures.roles import own_tables_dsn

HEALTH_CHECK_INTERVAL_S = 0.5
# Long enough for Envoy to see NOT_SERVING (a check every interval) before calls are refused.
DRAIN_S = 4 * HEALTH_CHECK_INTERVAL_S
# The target: a process that comes back gets calls within this long.
BACK_WITHIN_S = 5.0
RETRIES = "cluster.datamorph_gateway.upstream_rq_retry"


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> float:
    """Poll `condition` until it holds; the seconds it took. Fails the test after `timeout_s`."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - began


class Pair:
    """Two gateway processes behind one Envoy."""

    def __init__(self, gateways: list[Restartable], sidecar: Sidecar) -> None:
        self.gateways = gateways
        self.sidecar = sidecar

    def served(self, gateway: Restartable) -> int:
        """Requests Envoy has sent to `gateway` (its port keeps its count across restarts)."""
        return int(self.sidecar.hosts().get(gateway.address, {}).get("rq_total", "0"))

    def active(self) -> list[Restartable]:
        """The gateways with a request in progress."""
        hosts = self.sidecar.hosts()
        return [g for g in self.gateways if int(hosts[g.address].get("rq_active", "0")) > 0]

    def all_healthy(self) -> bool:
        hosts = self.sidecar.hosts()
        return all(hosts.get(g.address, {}).get("health_flags") == "healthy" for g in self.gateways)

    def back(self, gateway: Restartable) -> float:
        """Seconds until Envoy sends `gateway` a request again."""
        before = self.served(gateway)
        return wait_until(lambda: self.served(gateway) > before, f"{gateway.address} gets calls")


@pytest.fixture(scope="module")
def pair(seeded_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    directory = tmp_path_factory.mktemp("failover")
    env = gateway_env(
        DATABASE_URL=seeded_database,
        SIDECAR_SECRET=SIDECAR_SECRET,
        ORCHESTRATOR_HANDLER=HANDLER,
        DRAIN_S=str(DRAIN_S),
        GRACE_PERIOD_S="2",
    )
    gateways = [Restartable(env, directory / f"gateway{i}.log") for i in (1, 2)]
    try:
        for gateway in gateways:
            gateway.start()
        upstreams = ",".join(g.address for g in gateways)
        with running_envoy(
            directory / "envoy", upstreams, health_check_interval_s=HEALTH_CHECK_INTERVAL_S
        ) as sidecar:
            yield Pair(gateways, sidecar)
    finally:
        for gateway in gateways:
            gateway.close()


@pytest.fixture
def both(pair: Pair) -> Pair:
    """Both gateways running and healthy in Envoy's eyes (a test before may have killed one)."""
    for gateway in pair.gateways:
        gateway.ensure_started()
    wait_until(pair.all_healthy, "both gateways healthy")
    return pair


def get_data(sidecar: Sidecar) -> Callable[[], Response]:
    return lambda: sidecar.rest.post(
        "/get/data", {"table_names": ["customers"], "limit": 1}, timeout_s=10
    )


def test_a_killed_gateway_costs_no_read_and_is_back_within_5_s(both: Pair) -> None:
    victim = both.gateways[0]
    retries = both.sidecar.stat(RETRIES)
    with Load(get_data(both.sidecar), threads=4) as load:
        load.wait_for(50, at_least_s=1)
        killed = time.monotonic()
        victim.kill()
        load.wait_for(50, at_least_s=1)  # the survivor alone
        starting = time.monotonic()
        victim.start()
        ready = time.monotonic()
        back = both.back(victim)
        load.wait_for(50, at_least_s=1)
    retried = both.sidecar.stat(RETRIES) - retries
    print(
        f"\nSIGKILL of 1 of 2 gateways under GetData load: {load.total} requests, "
        f"{len(load.failures)} failed, {retried} retried by Envoy; started again "
        f"{starting - killed:.2f} s after the kill (ready in {ready - starting:.2f} s), it got "
        f"calls {back:.2f} s after it was ready"
    )
    assert load.failures == []
    assert retried > 0  # calls did reach the dead process, and were sent to the other
    assert back <= BACK_WITHIN_S


def test_a_rolling_restart_with_sigterm_costs_no_read(both: Pair) -> None:
    retries = both.sidecar.stat(RETRIES)
    figures = []
    began = time.monotonic()
    with Load(get_data(both.sidecar), threads=4) as load:
        load.wait_for(50)
        for gateway in both.gateways:
            stopping = time.monotonic()
            assert gateway.terminate() == 0
            stopped = time.monotonic() - stopping
            gateway.start()
            back = both.back(gateway)
            figures.append(f"{gateway.address} stopped in {stopped:.2f} s, back in {back:.2f} s")
            load.wait_for(50)
    retried = both.sidecar.stat(RETRIES) - retries
    print(
        f"\nSIGTERM rolling restart of 2 gateways (DRAIN_S {DRAIN_S:g}) under GetData load: "
        f"{load.total} requests in {time.monotonic() - began:.1f} s, {len(load.failures)} "
        f"failed, {retried} retried by Envoy; " + "; ".join(figures)
    )
    assert load.failures == []


def test_a_gateway_that_starts_after_envoy_gets_calls_within_seconds(
    both: Pair, tmp_path: Path
) -> None:
    """A fresh Envoy, the production health-check interval and no traffic yet: a gateway
    down at Envoy's first check is checked again every RECHECK_S, not every 60 s (Envoy's
    default no_traffic_interval, which kept such a gateway out for a minute)."""
    late = both.gateways[1]
    late.kill()
    upstreams = ",".join(g.address for g in both.gateways)
    interval = SidecarOptions().health_check_interval_s
    with running_envoy(tmp_path / "envoy", upstreams, health_check_interval_s=interval) as fresh:

        def flags() -> str:
            return fresh.hosts()[late.address]["health_flags"]

        wait_until(lambda: flags() == "/failed_active_hc", "the first check fails")
        late.start()
        healthy = wait_until(lambda: flags() == "healthy", "the late gateway healthy")
        for _ in range(20):  # round robin: every other call, once it is healthy
            assert get_data(fresh)().status == 200
        served = int(fresh.hosts()[late.address]["rq_total"])
    print(
        f"\nA gateway started after Envoy's first check (interval {interval:g} s, no "
        f"traffic yet): healthy {healthy:.2f} s after it was ready, then served {served} "
        "of 20 calls"
    )
    assert healthy <= BACK_WITHIN_S
    assert served > 0


def _kill_the_one_running_it(pair: Pair, call: Future[Response]) -> tuple[object, int]:
    """SIGKILL the gateway that has the call in progress; what the caller got (a response,
    or the error of a connection closed mid-answer) and how many retries Envoy made."""
    wait_until(lambda: len(pair.active()) == 1, "the call in progress on one gateway")
    [running] = pair.active()
    retries = pair.sidecar.stat(RETRIES)
    running.kill()
    try:
        got: object = call.result(timeout=15)
    except TimeoutError:  # before OSError, of which it is one
        raise AssertionError("the caller got no answer: the call was sent again") from None
    except (OSError, http.client.HTTPException) as exc:
        got = exc
    return got, pair.sidecar.stat(RETRIES) - retries


def _failed(got: object) -> bool:
    return not isinstance(got, Response) or got.status >= 500


def _told(got: object) -> str:
    """What the caller got, in one line."""
    if isinstance(got, Response):
        return f"{got.status} {got.body.decode(errors='replace').strip()}"
    return f"{type(got).__name__}: {got}"


def test_a_start_workflow_whose_gateway_dies_mid_run_is_not_sent_again(
    both: Pair, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    request = {"prompt": prompt(calls=calls, hold_s=30), "target_table": "t"}
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(both.sidecar.rest.post, "/start", request, timeout_s=10)
        wait_until(lambda: calls.exists() and bool(calls.read_text()), "the handler runs")
        got, retried = _kill_the_one_running_it(both, call)
    runs = calls.read_text().split()
    print(
        f"\nStartWorkflow, its gateway killed mid-run: the caller got {_told(got)}; "
        f"handler calls {len(runs)}, Envoy retries {retried}"
    )
    assert _failed(got), got
    assert len(runs) == 1  # the orchestrator ran once
    assert retried == 0


def test_a_start_workflow_whose_gateway_dies_before_answering_is_not_sent_again(
    both: Pair, tmp_path: Path, seeded_database: str
) -> None:
    """The gateway is killed while it records the run's lease, which a lock holds up: no
    answer has begun (the run id goes out once the run starts), so only the route's retry
    policy keeps Envoy from sending the call to the other gateway."""
    calls = tmp_path / "calls"
    request = {"prompt": prompt(calls=calls, hold_s=30), "target_table": "t"}
    lock = psycopg2.connect(own_tables_dsn(seeded_database))
    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE datamorph_gateway.run_leases IN EXCLUSIVE MODE")
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(both.sidecar.rest.post, "/start", request, timeout_s=10)
            got, retried = _kill_the_one_running_it(both, call)
    finally:
        lock.rollback()
        lock.close()
    print(
        f"\nStartWorkflow, its gateway killed before it answered: the caller got {_told(got)}; "
        f"Envoy retries {retried}"
    )
    assert _failed(got), got
    assert retried == 0
    assert not calls.exists()  # nobody ran it


def test_a_writing_query_whose_gateway_dies_is_not_sent_again(
    both: Pair, seeded_database: str
) -> None:
    table = f"failover_{uuid.uuid4().hex[:8]}"
    sequence = f"{table}_n"
    setup = both.sidecar.rest.post(
        "/execute/query",
        {"query": f"CREATE SEQUENCE {sequence}; CREATE TABLE {table} (n bigint)"},
    )
    assert setup.status == 200, setup.body
    # The INSERT takes a number from the sequence (which no rollback returns), then the
    # script sleeps: the gateway is killed mid-call, after the write reached the database.
    query = f"INSERT INTO {table} VALUES (nextval('{sequence}')); SELECT pg_sleep(10)"
    taken_sql = f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"

    def numbers_taken() -> int:
        conn = psycopg2.connect(seeded_database)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(taken_sql)
                row = cur.fetchone()
                assert row is not None
                return int(row[0])
        finally:
            conn.close()

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(both.sidecar.rest.post, "/execute/query", {"query": query}, timeout_s=30)
        wait_until(lambda: numbers_taken() == 1, "the INSERT runs")
        got, retried = _kill_the_one_running_it(both, call)
    taken = numbers_taken()
    print(
        f"\nA writing ExecuteQuery, its gateway killed mid-call: the caller got {_told(got)}; "
        f"sequence numbers taken {taken}, Envoy retries {retried}"
    )
    assert _failed(got), got
    assert taken == 1  # a second execution would have taken a second number
    assert retried == 0
