"""StreamQuery: any result size in bounded batches, over gRPC and as NDJSON through Envoy."""

from __future__ import annotations

import json

import grpc
import psycopg2
import pytest
from google.protobuf import json_format

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc

from ..fixtures.envoy import Rest
from ..fixtures.gateway import GatewayFactory


def rows_of(responses: list[pb.StreamQueryResponse]) -> list[dict]:  # type: ignore[type-arg]
    return [json_format.MessageToDict(r) for resp in responses for r in resp.rows]


def test_rows_arrive_in_batches_with_columns_first(stub: pb_grpc.DataMorphGatewayStub) -> None:
    responses = list(
        stub.StreamQuery(
            pb.StreamQueryRequest(
                query="SELECT g AS n, g::text AS s FROM generate_series(1, $1) g ORDER BY g",
                # A Value parses any JSON value; the stubs only know objects.
                params=[json_format.ParseDict(25, pb.StreamQueryRequest().params.add())],  # type: ignore[arg-type]
                batch_rows=10,
            )
        )
    )
    assert [len(r.rows) for r in responses] == [10, 10, 5]
    assert [(c.name, c.type) for c in responses[0].columns] == [("n", "int4"), ("s", "text")]
    assert all(not r.columns for r in responses[1:])
    assert [r.done for r in responses] == [False, False, True]
    assert [r.rows_sent for r in responses] == [10, 20, 25]
    assert [row["n"] for row in rows_of(responses)] == list(range(1, 26))


def test_an_exact_multiple_and_an_empty_result_end_with_done(
    stub: pb_grpc.DataMorphGatewayStub,
) -> None:
    exact = list(stub.StreamQuery(pb.StreamQueryRequest(query="SELECT 1 AS a", batch_rows=1)))
    assert [(len(r.rows), r.done) for r in exact] == [(1, True)]
    empty = list(stub.StreamQuery(pb.StreamQueryRequest(query="SELECT 1 AS a WHERE false")))
    assert [(len(r.rows), r.done, len(r.columns)) for r in empty] == [(0, True, 1)]


def test_large_result_is_not_capped(stub: pb_grpc.DataMorphGatewayStub) -> None:
    total = 0
    for response in stub.StreamQuery(
        pb.StreamQueryRequest(query="SELECT g FROM generate_series(1, 50000) g", batch_rows=5000)
    ):
        total += len(response.rows)
    assert total == 50000  # five times the ExecuteQuery row cap


def test_cancelling_the_stream_frees_the_connection(
    make_gateway: GatewayFactory, seeded_database: str
) -> None:
    from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc

    gateway = make_gateway(db_pool_max=1, db_application_name="gw-stream-cancel")
    with grpc.insecure_channel(gateway.address) as channel:
        stub = pb_grpc.DataMorphGatewayStub(channel)
        call = stub.StreamQuery(
            pb.StreamQueryRequest(
                query="SELECT g FROM generate_series(1, 10000000) g", batch_rows=100
            )
        )
        next(call)
        call.cancel()
        # The only pooled connection comes back: the next request is served.
        response = stub.ExecuteQuery(pb.ExecuteQueryRequest(query="SELECT 1 AS ok"), timeout=10)
        assert response.row_count == 1
    conn = psycopg2.connect(seeded_database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gw-stream-cancel'"
                " AND state = 'idle in transaction'"
            )
            row = cur.fetchone()
            assert row is not None
            assert row[0] == 0
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("INSERT INTO tiny VALUES (9)", "query"),
        ("SELECT 1; SELECT 2", "query"),
        ("", "query"),
    ],
)
def test_only_single_queries_stream(
    stub: pb_grpc.DataMorphGatewayStub, query: str, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamQuery(pb.StreamQueryRequest(query=query)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


def test_writes_inside_a_query_are_refused(stub: pb_grpc.DataMorphGatewayStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.StreamQuery(
                pb.StreamQueryRequest(
                    query="WITH x AS (DELETE FROM tiny RETURNING 1) SELECT * FROM x"
                )
            )
        )
    assert err.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    )


@pytest.mark.parametrize("batch_rows", [0, -1, 10_001])
def test_batch_rows_out_of_range(stub: pb_grpc.DataMorphGatewayStub, batch_rows: int) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(stub.StreamQuery(pb.StreamQueryRequest(query="SELECT 1", batch_rows=batch_rows)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch_rows" in err.value.details()


def test_rest_stream_is_newline_delimited_json(rest: Rest) -> None:
    response = rest.post(
        "/stream/query",
        {
            "query": "SELECT g AS n, 9007199254740993::int8 AS big FROM generate_series(1, 7) g",
            "batch_rows": 3,
        },
    )
    assert response.status == 200
    lines = [json.loads(line) for line in response.body.decode().splitlines() if line.strip()]
    assert [len(line["rows"]) for line in lines] == [3, 3, 1]
    assert all(line["status"] == "success" for line in lines)
    assert lines[0]["columns"][1] == {"name": "big", "type": "int8", "key": "big"}
    assert lines[-1]["done"] is True
    assert lines[0]["rows"][0] == {"n": 1, "big": "9007199254740993"}
