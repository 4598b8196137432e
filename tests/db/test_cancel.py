"""Time limits the caller cannot lift, and calls that end take their query with them.

The gateway keeps its own deadline for caller SQL and cancels the backend when
it passes, whatever the session's statement_timeout says; a call that ends
early (client cancel, deadline, a REST client that hangs up) cancels its query
and gives its connection back. What a user notices is checked from the
database's side: the query gone from pg_stat_activity, the pool free again.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg2
import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.app import Gateway
from datamorph_gateway.db.cancel import CancelScope
from datamorph_gateway.db.sqltext import parse
from datamorph_gateway.errors import Cancelled, DeadlineExceeded

from ..fixtures.envoy import EnvoyFactory
from ..fixtures.gateway import GatewayFactory

# A statement that would sleep far past every limit below once its timeout is lifted.
LONG_S = 30


@pytest.fixture
def admin(
    seeded_database: str, database_admin_url: str
) -> Iterator[psycopg2.extensions.connection]:
    """A superuser's connection, to watch pg_stat_activity from outside the gateway (the
    query text of another role's session is hidden from everyone else)."""
    conn = psycopg2.connect(database_admin_url)
    conn.autocommit = True
    yield conn
    conn.close()


def running(admin: psycopg2.extensions.connection, app: str) -> list[str]:
    """The queries the gateway's sessions are running (or holding a transaction open for)."""
    with admin.cursor() as cur:
        cur.execute(
            "SELECT query FROM pg_stat_activity WHERE application_name = %s"
            " AND state <> 'idle' AND pid <> pg_backend_pid()",
            (app,),
        )
        return [row[0] for row in cur.fetchall()]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    """Whether the predicate came true within the time (generous: a test, not a benchmark)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def busy(gateway: Gateway) -> int:
    stats = gateway.database.pool.stats()
    return stats["open"] - stats["idle"]


def start(make_gateway: GatewayFactory, **overrides: Any) -> tuple[Gateway, str]:
    app = f"gw-cancel-{uuid.uuid4().hex[:8]}"
    return make_gateway(db_application_name=app, **overrides), app


def assert_released(gateway: Gateway, admin: psycopg2.extensions.connection, app: str) -> None:
    assert wait_for(lambda: not running(admin, app)), running(admin, app)
    assert wait_for(lambda: busy(gateway) == 0), gateway.database.pool.stats()


def backend_pid(stub: pb_grpc.DataMorphGatewayStub) -> int:
    response = stub.ExecuteQuery(
        pb.ExecuteQueryRequest(query="SELECT pg_backend_pid() AS pid"), timeout=10
    )
    return int(response.rows[0].struct_value.fields["pid"].number_value)


# -- (a) the limit holds whatever the session says ---------------------------------

# The parser refuses every SET of statement_timeout it can see (tests/db/test_sqlpolicy.py);
# these lift it where no check on the text can: functions the database already has (made
# here outside the gateway), and a dynamic EXECUTE whose text is built at run time.
LIFTERS = """
CREATE OR REPLACE FUNCTION dmgw_lift_timeout() RETURNS text LANGUAGE sql
    AS $$ SELECT set_config('statement_timeout', '0', false) $$;
CREATE OR REPLACE FUNCTION dmgw_nap(s float8) RETURNS void LANGUAGE sql
    SET statement_timeout = 0 AS 'SELECT pg_sleep(s)';
"""


@pytest.fixture
def lifters(admin: psycopg2.extensions.connection) -> None:
    with admin.cursor() as cur:
        cur.execute(LIFTERS)


@pytest.mark.parametrize(
    "query",
    [
        f"SELECT dmgw_lift_timeout(); SELECT pg_sleep({LONG_S})",
        f"DO $$ BEGIN EXECUTE 'SET statement' || '_timeout = 0'; END $$; SELECT pg_sleep({LONG_S})",
        # These two PostgreSQL's own timer stops too (it was armed before the setting
        # changed); they stay here so that the limit is shown to hold for them as well.
        f"SELECT dmgw_lift_timeout(), pg_sleep({LONG_S})",
        f"SELECT dmgw_nap({LONG_S})",
    ],
    ids=["function-then-sleep", "dynamic-execute", "function-with-sleep", "function-setting"],
)
def test_a_lifted_statement_timeout_does_not_lift_the_limit(
    make_gateway: GatewayFactory, admin: psycopg2.extensions.connection, lifters: None, query: str
) -> None:
    gateway, app = start(make_gateway, statement_timeout_s=1.0)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.ExecuteQuery(pb.ExecuteQueryRequest(query=query), timeout=LONG_S + 10)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began < LONG_S / 3  # cut off near the 1 s limit
        assert_released(gateway, admin, app)
        assert backend_pid(stub) > 0  # and the pool serves the next call


def test_a_stream_cannot_lift_its_limit_either(
    make_gateway: GatewayFactory, admin: psycopg2.extensions.connection, lifters: None
) -> None:
    gateway, app = start(make_gateway, stream_timeout_s=1.0)
    query = (
        "SELECT dmgw_lift_timeout() AS s,"
        f" pg_sleep(CASE WHEN g > 1 THEN {LONG_S} ELSE 0 END) FROM generate_series(1, 3) g"
    )
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamQuery(pb.StreamQueryRequest(query=query, batch_rows=1), timeout=60))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began < LONG_S / 3
        assert_released(gateway, admin, app)


# -- (b) a caller that gives up takes its query with it ----------------------------


def test_a_cancelled_call_cancels_its_query_and_the_connection_is_not_reused(
    make_gateway: GatewayFactory, admin: psycopg2.extensions.connection
) -> None:
    gateway, app = start(make_gateway, db_pool_max=1)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        before = backend_pid(stub)
        future = stub.ExecuteQuery.future(
            pb.ExecuteQueryRequest(query=f"SELECT pg_sleep({LONG_S})")
        )
        assert wait_for(lambda: bool(running(admin, app)))
        future.cancel()
        assert_released(gateway, admin, app)
        # A connection that was sent a cancel is closed, never lent again: no stray
        # cancel can reach the next caller's query.
        after = backend_pid(stub)
        assert after != before
        for _ in range(5):
            assert backend_pid(stub) == after


def test_a_short_client_deadline_holds_even_with_the_timeout_lifted(
    make_gateway: GatewayFactory, admin: psycopg2.extensions.connection, lifters: None
) -> None:
    gateway, app = start(make_gateway, db_pool_max=1)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ExecuteQuery(
                pb.ExecuteQueryRequest(
                    query=f"SELECT dmgw_lift_timeout(); SELECT pg_sleep({LONG_S})"
                ),
                timeout=0.5,
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert_released(gateway, admin, app)
        assert backend_pid(stub) > 0


# -- (c) streams: gRPC and REST through Envoy ----------------------------------------

# Rows 1 and 2 come at once, so the first message is sent; row 3 then takes long.
SLOW_AFTER_TWO = (
    f"SELECT g, pg_sleep(CASE WHEN g > 2 THEN {LONG_S} ELSE 0 END) AS z"
    " FROM generate_series(1, 1000) g"
)


def test_a_stream_cancelled_while_computing_its_next_batch(
    make_gateway: GatewayFactory, admin: psycopg2.extensions.connection
) -> None:
    gateway, app = start(make_gateway, db_pool_max=1)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        call = stub.StreamQuery(pb.StreamQueryRequest(query=SLOW_AFTER_TWO, batch_rows=1))
        first = next(call)
        assert first.rows_sent == 1
        assert wait_for(lambda: bool(running(admin, app)))
        call.cancel()
        assert_released(gateway, admin, app)
        assert backend_pid(stub) > 0


def test_a_stream_cancelled_while_blocked_on_sending(
    make_gateway: GatewayFactory, admin: psycopg2.extensions.connection
) -> None:
    """The client reads nothing, so the server's sends stall on flow control."""
    gateway, app = start(make_gateway, db_pool_max=1)
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        call = stub.StreamQuery(
            pb.StreamQueryRequest(
                query="SELECT repeat('x', 100000) AS big FROM generate_series(1, 100000)",
                batch_rows=20,
            )
        )
        assert wait_for(lambda: bool(running(admin, app)))
        time.sleep(0.5)  # let the sends fill the windows and stall
        call.cancel()
        assert_released(gateway, admin, app)
        assert backend_pid(stub) > 0


def test_a_rest_client_that_hangs_up_mid_stream(
    make_gateway: GatewayFactory, make_envoy: EnvoyFactory, admin: psycopg2.extensions.connection
) -> None:
    gateway, app = start(make_gateway, db_pool_max=1)
    sidecar = make_envoy(gateway.address)
    body = json.dumps({"query": SLOW_AFTER_TWO, "batch_rows": 1}).encode()
    with socket.create_connection((sidecar.rest.host, sidecar.rest.port), timeout=10) as sock:
        sock.sendall(
            b"POST /stream/query HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b'"rows_sent"' not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        assert wait_for(lambda: bool(running(admin, app)))
    assert_released(gateway, admin, app)
    assert sidecar.rest.post("/execute/query", {"query": "SELECT 1 AS ok"}).status == 200


# -- (d) the scope itself: races with the pool ------------------------------------------


def test_cancels_racing_with_short_queries_never_reach_another_call(
    make_gateway: GatewayFactory,
) -> None:
    """Cancel scopes fired at random moments around short queries, on a one-connection pool.

    Each call either succeeds or says it was cancelled; a call of its own, with no
    cancel, never sees one; and no pool slot is lost.
    """
    gateway, _ = start(make_gateway, db_pool_max=1)
    db = gateway.database
    outcomes = {"ok": 0, "cancelled": 0}
    for i in range(60):
        with CancelScope(5.0) as scope:
            timer = threading.Timer(0.0005 * (i % 7), scope.cancel)
            timer.start()
            try:
                db.execute(
                    parse("SELECT pg_sleep(0.002)"),
                    None,
                    read_only=False,
                    max_rows=10,
                    timeout_s=5.0,
                    scope=scope,
                )
                outcomes["ok"] += 1
            except Cancelled:
                outcomes["cancelled"] += 1
            timer.join()
        with CancelScope(5.0) as quiet:
            result = db.execute(
                parse("SELECT pg_sleep(0.004), 1 AS one"),
                None,
                read_only=False,
                max_rows=10,
                timeout_s=5.0,
                scope=quiet,
            )
            assert len(result.rows) == 1
    assert sum(outcomes.values()) == 60
    assert busy(gateway) == 0


def test_a_scope_past_its_deadline_refuses_to_start_sql(make_gateway: GatewayFactory) -> None:
    gateway, _ = start(make_gateway)
    with CancelScope(0.01) as scope:
        time.sleep(0.1)
        with pytest.raises(DeadlineExceeded):
            gateway.database.get_data([], [], 1, 1.0, scope=scope)
    assert busy(gateway) == 0


STUBBORN = """
CREATE OR REPLACE FUNCTION dmgw_stubborn(seconds float8) RETURNS int LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp(); n int := 0;
BEGIN
    WHILE clock_timestamp() < t0 + seconds * interval '1 second' LOOP
        BEGIN
            PERFORM pg_sleep(0.1);
        EXCEPTION WHEN query_canceled THEN
            n := n + 1;
        END;
    END LOOP;
    RETURN n;
END $$;
"""


def test_a_query_that_swallows_cancels_is_ended_and_commits_nothing(
    make_gateway: GatewayFactory, admin: psycopg2.extensions.connection
) -> None:
    """A handler for query_canceled (in a function the checks cannot see) once ran 12 s
    against a 2 s limit and committed; now its backend is terminated and nothing commits."""
    with admin.cursor() as cur:
        cur.execute(STUBBORN)
    gateway, app = start(make_gateway, statement_timeout_s=1.0)
    table = f"stubborn_{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        stub.ExecuteQuery(pb.ExecuteQueryRequest(query=f"CREATE TABLE {table} (a int)"), timeout=10)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.ExecuteQuery(
                pb.ExecuteQueryRequest(
                    query=f"INSERT INTO {table} VALUES (1); SELECT dmgw_stubborn({LONG_S})"
                ),
                timeout=LONG_S + 10,
            )
        assert err.value.code() in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,  # the backend was terminated under it
        )
        assert time.monotonic() - began < LONG_S / 3
        assert_released(gateway, admin, app)
        assert backend_pid(stub) > 0
    with admin.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone() == (0,)
