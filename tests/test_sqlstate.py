"""SQLSTATE to gRPC code, end to end: the database's message reaches the caller."""

from __future__ import annotations

import logging

import grpc
import pytest

from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.errors import kind_for_sqlstate
from datamorph_gateway.status import status_code

S = grpc.StatusCode


@pytest.mark.parametrize(
    ("sqlstate", "code"),
    [
        ("42601", S.INVALID_ARGUMENT),
        ("22012", S.INVALID_ARGUMENT),
        ("42P01", S.NOT_FOUND),
        ("42501", S.PERMISSION_DENIED),
        ("23505", S.ALREADY_EXISTS),
        ("23503", S.FAILED_PRECONDITION),
        ("23514", S.FAILED_PRECONDITION),
        ("57014", S.DEADLINE_EXCEEDED),
        ("40001", S.ABORTED),
        ("40P01", S.ABORTED),
        ("53100", S.RESOURCE_EXHAUSTED),
        ("53300", S.RESOURCE_EXHAUSTED),
        ("08006", S.UNAVAILABLE),
        ("P0001", S.FAILED_PRECONDITION),
    ],
)
def test_raised_sqlstate_maps_to_code(
    client: GatewayClient, sqlstate: str, code: grpc.StatusCode
) -> None:
    query = (
        "DO $$ BEGIN RAISE EXCEPTION 'raised on purpose' "
        f"USING ERRCODE = '{sqlstate}', HINT = 'a hint'; END $$"
    )
    with pytest.raises(GatewayError) as err:
        client.execute_query(query)
    assert err.value.code == code
    if code != S.UNAVAILABLE:
        assert "raised on purpose" in err.value.message
        assert "HINT: a hint" in err.value.message
        assert err.value.sqlstate == sqlstate
        assert err.value.reason == "QUERY_FAILED"


def test_real_errors_carry_the_database_message(client: GatewayClient) -> None:
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELEC 1")
    assert err.value.code == S.INVALID_ARGUMENT
    assert 'syntax error at or near "SELEC"' in err.value.message
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELECT * FROM no_such_relation")
    assert err.value.code == S.NOT_FOUND
    assert 'relation "no_such_relation" does not exist' in err.value.message
    with pytest.raises(GatewayError) as err:
        client.execute_query("INSERT INTO ledger VALUES (1, -5)")
    assert err.value.code == S.FAILED_PRECONDITION
    assert err.value.sqlstate == "23514"
    with pytest.raises(GatewayError) as err:
        client.execute_query("INSERT INTO orders (customer_id) VALUES (-1)")
    assert err.value.code in (S.FAILED_PRECONDITION, S.INVALID_ARGUMENT)
    assert err.value.sqlstate is not None
    assert err.value.sqlstate.startswith("23")


def test_permission_denied(client: GatewayClient) -> None:
    # The database's own refusal (42501): the serving role may not read the password hashes.
    with pytest.raises(GatewayError) as err:
        client.execute_query("SELECT count(*) FROM pg_catalog.pg_authid")
    assert err.value.code == S.PERMISSION_DENIED
    assert err.value.sqlstate == "42501"


def test_internal_errors_hide_details_and_log_a_traceback(
    client: GatewayClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with pytest.raises(GatewayError) as err:
        client.execute_query(
            "DO $$ BEGIN RAISE EXCEPTION 'secret internals' USING ERRCODE = 'XX000'; END $$"
        )
    assert err.value.code == S.INTERNAL
    assert "secret internals" not in err.value.message
    assert err.value.request_id
    assert err.value.request_id in err.value.message
    assert "internal error" in err.value.message
    assert any("secret internals" in (r.exc_text or "") for r in caplog.records)


def test_request_id_from_metadata_is_used(client: GatewayClient) -> None:
    c = GatewayClient.__new__(GatewayClient)
    c.__dict__.update(client.__dict__)
    c._hook = lambda: [("x-request-id", "req-abc-123")]
    with pytest.raises(GatewayError) as err:
        c.execute_query("SELECT * FROM nowhere")
    assert err.value.request_id == "req-abc-123"


def test_unknown_classes_and_server_faults() -> None:
    assert status_code(kind_for_sqlstate("XX001")) == S.INTERNAL
    assert status_code(kind_for_sqlstate("58030")) == S.INTERNAL
    assert status_code(kind_for_sqlstate("3D000")) == S.FAILED_PRECONDITION
