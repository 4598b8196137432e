"""LOG_FORMAT=json: one object per line, the named fields, nothing a record merely carries."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from datamorph_gateway import logging_setup
from datamorph_gateway.audit import mask_constants
from datamorph_gateway.observability import jsonlog, tracing
from datamorph_gateway.rpc import request_id_var


class Captured:
    def __init__(self, stream: io.StringIO, logger: logging.Logger) -> None:
        self.stream = stream
        self.logger = logger

    def lines(self) -> list[dict[str, Any]]:
        raw = self.stream.getvalue().splitlines()
        return [json.loads(line) for line in raw]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """A logger writing through JsonFormatter, request ids stamped as logging_setup does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(jsonlog.make_formatter("json", logging_setup.FORMAT))
    handler.addFilter(logging_setup.RequestIdFilter())
    logger = logging.getLogger("datamorph_gateway.test_jsonlog")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield Captured(stream, logger)
    finally:
        logger.removeHandler(handler)


def test_a_line_is_one_json_object_with_the_basic_fields(captured: Captured) -> None:
    captured.logger.info("hello %s", "world")
    (line,) = captured.lines()
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["logger"] == "datamorph_gateway.test_jsonlog"
    assert line["where"].startswith("test_a_line_is_one_json_object_with_the_basic_fields:")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    assert "request_id" not in line  # outside a request
    assert "trace_id" not in line


def test_the_access_lines_fields_and_the_request_id(captured: Captured) -> None:
    token = request_id_var.set("req-123")
    try:
        captured.logger.info(
            "rpc %s code=%s duration_ms=%.2f peer=%s principal=%s",
            "GetData", "OK", 1.23456, "ipv4:127.0.0.1:5000", "etl",
            extra={"rpc": "GetData", "code": "OK", "duration_ms": 1.23456,
                   "peer": "ipv4:127.0.0.1:5000", "principal": "etl"},
        )  # fmt: skip
    finally:
        request_id_var.reset(token)
    (line,) = captured.lines()
    assert line["request_id"] == "req-123"
    assert line["rpc"] == "GetData"
    assert line["code"] == "OK"
    assert line["duration_ms"] == 1.23
    assert line["principal"] == "etl"
    assert line["peer"] == "ipv4:127.0.0.1:5000"


def test_only_the_named_fields_leave_the_record(captured: Captured) -> None:
    query = "SELECT * FROM users WHERE password = 'hunter2'"
    captured.logger.info(
        "query rows=%d sql=%r",
        1,
        mask_constants(query),
        extra={"sql": mask_constants(query), "rows": 1, "outcome": "ok", "params": 0,
               "read_only": True, "password": "hunter2", "dsn": "postgresql://u:s3cret@h/db"},
    )  # fmt: skip
    (line,) = captured.lines()
    text = captured.stream.getvalue()
    assert "hunter2" not in text
    assert "s3cret" not in text
    assert line["sql"] == "SELECT * FROM users WHERE password = ?"
    assert (line["rows"], line["outcome"], line["params"], line["read_only"]) == (1, "ok", 0, True)
    assert set(line) <= {"timestamp", "level", "logger", "where", "message", *jsonlog.FIELDS}


def test_an_exception_stays_on_its_line(captured: Captured) -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        captured.logger.exception("unhandled error in %s", "GetData")
    assert len(captured.stream.getvalue().splitlines()) == 1
    (line,) = captured.lines()
    assert line["level"] == "ERROR"
    assert "Traceback" in line["exception"]
    assert "RuntimeError: boom" in line["exception"]


def test_trace_and_span_ids_while_a_span_is_current(
    captured: Captured, spans: InMemorySpanExporter
) -> None:
    span = tracing.start_rpc_span(
        "GetData", [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    )
    assert span is not None
    captured.logger.info("inside")
    span.finish("OK")
    captured.logger.info("outside")
    inside, outside = captured.lines()
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    (finished,) = spans.get_finished_spans()
    assert finished.context is not None
    assert inside["span_id"] == format(finished.context.span_id, "016x")
    assert "trace_id" not in outside


def test_text_stays_the_default_format() -> None:
    record = logging.LogRecord("x.y", logging.WARNING, __file__, 7, "hi %s", ("there",), None)
    record.request_id = "-"
    text = jsonlog.make_formatter("text", logging_setup.FORMAT)
    assert text.format(record) == logging.Formatter(logging_setup.FORMAT).format(record)
    with pytest.raises(ValueError, match="LOG_FORMAT must be one of text, json"):
        jsonlog.make_formatter("xml", logging_setup.FORMAT)
