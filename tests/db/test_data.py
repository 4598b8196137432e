"""GetData: random samples, their encoding, and sampling that does not read the whole table."""

from __future__ import annotations

import json

import grpc
import psycopg2
import pytest
from google.protobuf import json_format

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.db import catalog, sampling
from datamorph_gateway.db.names import parse_table_name

from ..fixtures.gateway import GatewayFactory


def test_default_limit_is_ten_rows_per_table(client: GatewayClient) -> None:
    samples = client.get_data(["customers", "orders"])
    assert len(samples["customers"].rows) == 10
    assert len(samples["orders"].rows) == 10


def test_rows_are_plain_objects_keyed_by_column(stub: pb_grpc.DataMorphGatewayStub) -> None:
    response = stub.GetData(pb.GetDataRequest(table_names=["customers"], limit=3))
    body = json_format.MessageToDict(response, preserving_proto_field_name=True)
    assert body["status"] == "success"
    rows = body["data"]["customers"]
    assert len(rows) == 3
    assert set(rows[0]) >= {"id", "name", "email", "country", "created_at", "lifetime_value"}
    assert isinstance(rows[0]["lifetime_value"], str)  # numeric is an exact decimal string
    columns = body["columns"]["customers"]
    assert columns[0] == {"name": "id", "type": "int8"}
    assert {"name": "lifetime_value", "type": "numeric"} in columns


def test_small_table_gives_all_its_rows(client: GatewayClient) -> None:
    rows = client.get_data(["tiny"], limit=10)["tiny"].rows
    assert sorted(str(r["id"]) for r in rows) == ["1", "2", "3"]


def test_sample_is_random(client: GatewayClient) -> None:
    samples = (client.get_data(["customers"], limit=5)["customers"].rows for _ in range(5))
    seen = {tuple(sorted(str(r["id"]) for r in rows)) for rows in samples}
    assert len(seen) > 1


def test_views_and_materialized_views_can_be_sampled(client: GatewayClient) -> None:
    samples = client.get_data(["big_spenders", "order_totals"], limit=4)
    assert len(samples["big_spenders"].rows) == 4
    assert all(float(str(r["lifetime_value"])) > 100 for r in samples["big_spenders"].rows)
    assert len(samples["order_totals"].rows) == 4


def test_values_follow_the_contract_encoding(stub: pb_grpc.DataMorphGatewayStub) -> None:
    """The JSON values on the wire; tests/client/test_values.py has what the client makes."""
    response = stub.GetData(pb.GetDataRequest(table_names=["typed"], limit=10))
    data = json_format.MessageToDict(response, preserving_proto_field_name=True)["data"]
    rows = {r["id"]: r for r in data["typed"]}
    first, second = rows[1], rows[2]
    assert first["big"] == "9007199254740993"
    assert first["exact"] == "12345678901234567890.123456789"
    assert first["ratio"] == "NaN"
    assert first["happened"] == "2024-02-29T08:15:00.123456+00:00"
    assert first["took"] == "P1Y2M3DT4H5M6.5S"
    assert first["raw"] == "AP8Q"
    assert first["doc"] == {"a": [1, 2, {"b": None}]}
    assert first["tags"] == ["x", "y,z", None]
    assert first["feeling"] == "happy"
    assert first["score"] == 42
    assert first["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert first["addr"] == "10.0.0.1"
    assert second["ratio"] == "Infinity"
    assert all(second[k] is None for k in ("big", "exact", "happened", "doc", "tags", "uid"))
    json.dumps(rows, allow_nan=False)


def test_big_table_is_sampled_by_blocks_not_scanned(seeded_database: str) -> None:
    """On a table far larger than the sample, the plan is TABLESAMPLE, not a full sort."""
    conn = psycopg2.connect(seeded_database)
    try:
        [events] = catalog.resolve(conn, [parse_table_name("events")], ["events"])
        percent = sampling.sample_percent(events, 10)
        assert percent is not None
        assert percent < 50
        _, rows = sampling.sample(conn, events, 10)
        assert len(rows) == 10
        assert len({r[0] for r in rows}) == 10
        [tiny] = catalog.resolve(conn, [parse_table_name("tiny")], ["tiny"])
        assert sampling.sample_percent(tiny, 10) is None
    finally:
        conn.close()


def test_stale_estimate_still_fills_the_sample(seeded_database: str) -> None:
    """When the planner believes a table is huge but it is nearly empty, rows still come back."""
    conn = psycopg2.connect(seeded_database)
    try:
        [events] = catalog.resolve(conn, [parse_table_name("events")], ["events"])
        lying = catalog.Relation(
            events.oid, events.schema, events.name, "r", 1e9, events.pages * 1000, 10
        )
        _, rows = sampling.sample(conn, lying, 25)
        assert len(rows) == 25
    finally:
        conn.close()


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_limit_out_of_range_is_invalid(client: GatewayClient, limit: int) -> None:
    with pytest.raises(GatewayError) as err:
        client.get_data(["customers"], limit=limit)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.violations[0].field == "limit"
    assert "limit" in err.value.message


def test_unknown_table_is_not_found(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.get_data(["customers", "missing_table"])
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert "missing_table" in err.value.message


def test_reads_are_bounded_by_the_deadline(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.get_data(["slow_view"], timeout_s=0.4)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The statement was cancelled in the database, and the connection is fine.
    assert client.get_data(["tiny"])["tiny"].rows


def test_reads_leave_no_session_state(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(db_pool_max=1)
    with GatewayClient(gateway.address) as c:
        c.get_data(["tiny"], timeout_s=5)
        result = c.execute_query(
            "SELECT extract(epoch FROM current_setting('statement_timeout')::interval) AS t"
        )
        # The request's own limit (30 s less the moments already spent), not the read's.
        assert 29 < float(str(result.rows[0]["t"])) <= 30
        assert c.execute_query("SELECT current_setting('transaction_read_only') AS r").rows == [
            {"r": "off"}
        ]
