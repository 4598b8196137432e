"""What operators read: one line per request, and an audit line per query without secrets."""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from pathlib import Path

import pytest

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway import logging_setup
from datamorph_gateway.audit import mask_constants
from datamorph_gateway.config import LoggingSettings

from .fixtures.envoy import Rest


def test_one_access_line_per_request(
    client: GatewayClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datamorph_gateway.access")
    client.get_data(["customers"], limit=1)
    with pytest.raises(GatewayError):
        client.get_data([])
    lines = [r.getMessage() for r in caplog.records if r.name == "datamorph_gateway.access"]
    assert len(lines) == 2
    assert lines[0].startswith("rpc GetData code=OK duration_ms=")
    assert lines[1].startswith("rpc GetData code=INVALID_ARGUMENT duration_ms=")


def test_audit_records_query_but_not_values_or_passwords(
    client: GatewayClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datamorph_gateway.audit")
    role = f"gw_audit_{uuid.uuid4().hex[:8]}"
    client.execute_query("SELECT $1::text AS secret_param", ["value-that-must-not-be-logged"])
    # A secret in any kind of literal, in a statement that runs and in one that fails.
    for password in ("'hunter2'", "$$s3cret$$", "U&'s3cret'", "E's3cret'"):
        client.execute_query(f"SELECT {password} AS password")
        with pytest.raises(GatewayError):
            client.execute_query(f"INSERT INTO {role} VALUES ({password})")
    with pytest.raises(GatewayError):
        client.execute_query("SELECT * FROM missing_for_audit")
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "datamorph_gateway.audit")
    assert "value-that-must-not-be-logged" not in text
    assert "hunter2" not in text
    assert "s3cret" not in text
    assert "params=1" in text
    assert "SELECT $1::text AS secret_param" in text
    assert "outcome=ok" in text
    assert "outcome=NOT_FOUND sqlstate=42P01" in text
    assert "peer=" in text


def test_a_forged_x_forwarded_for_never_reaches_the_audit_line(
    stub: pb_grpc.DataMorphGatewayStub, rest: Rest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datamorph_gateway.audit")
    forged = "203.0.113.66"
    # Through Envoy: it appends the address it saw; only that one is believed.
    answer = rest.post(
        "/execute/query",
        {"query": "SELECT 1 AS through_envoy"},
        headers={"x-forwarded-for": forged},
    )
    assert answer.status == 200, answer.body
    # Straight to the gRPC port, with or without a guessed sidecar secret.
    stub.ExecuteQuery(
        pb.ExecuteQueryRequest(query="SELECT 2 AS direct"), metadata=(("x-forwarded-for", forged),)
    )
    stub.ExecuteQuery(
        pb.ExecuteQueryRequest(query="SELECT 3 AS guessed"),
        metadata=(("x-forwarded-for", forged), ("x-datamorph-sidecar", "a-guess")),
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "datamorph_gateway.audit"]
    through, direct, guessed = (
        next(line for line in lines if marker in line)
        for marker in ("through_envoy", "AS direct", "AS guessed")
    )
    assert forged not in "\n".join(lines)
    # The address Envoy appended: the client's, or Envoy's own for a loopback client.
    match = re.search(r" forwarded_for=(\S+) ", through)
    assert match is not None, through
    ipaddress.ip_address(match.group(1))
    assert "forwarded_for=- " in direct
    assert "forwarded_for=- " in guessed


@pytest.mark.parametrize(
    ("sql", "logged"),
    [
        ("ALTER ROLE x PASSWORD 'a''b'", "ALTER ROLE x PASSWORD ?"),
        ("CREATE ROLE x PASSWORD $$s3cret$$", "CREATE ROLE x PASSWORD ?"),
        ("select 'host=h password=s3cret'", "select ?"),
        ("select U&'s\\0033cret', E's3\\'cret', x'ff', 42, 1.5", "select ?, ?, ?, ?, ?"),
        ("select $1, 's3cret'", "select $1, ?"),
        ("DO $body$ begin perform 's3cret'; end $body$", "DO ?"),
        # DDL and utility statements, which the parser's normalisation leaves as written.
        (
            "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (password 's3cret')",
            "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (password ?)",
        ),
        ("COMMENT ON TABLE t IS 'api_key=s3cret'", "COMMENT ON TABLE t IS ?"),
        ("PREPARE p AS SELECT 's3cret'", "PREPARE p AS SELECT ?"),
        ("CREATE TABLE t (a text DEFAULT 's3cret')", "CREATE TABLE t (a text DEFAULT ?)"),
        ("ALTER SYSTEM SET x = 's3cret'", "ALTER SYSTEM SET x = ?"),
        # Comments go, whatever they hold.
        ("select 1 -- s3cret\n, 2 /* s3cret */", "select ? , ?"),
        # Text that does not parse is masked all the same.
        ("selec 's3cret', $tag$s3cret$tag$ frm", "selec ?, ? frm"),
        # An unterminated literal could hold anything: nothing of it is logged.
        ("select 's3cret", "<14 characters the parser cannot read>"),
    ],
)
def test_no_literal_reaches_the_audit_line(sql: str, logged: str) -> None:
    assert mask_constants(sql) == logged


def test_log_lines_carry_time_level_place_and_request_id(tmp_path: Path) -> None:
    log_file = tmp_path / "gateway.log"
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging_setup.configure(LoggingSettings(log_file=str(log_file)))
        logging.getLogger("datamorph_gateway.test").info("hello")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
    line = log_file.read_text().strip()
    assert (
        " INFO datamorph_gateway.test test_log_lines_carry_time_level_place_and_request_id:" in line
    )
    assert line.endswith("[-] hello")
