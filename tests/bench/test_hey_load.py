"""bench.hey_load: hey's command line and its summary, read as the other generators' results."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bench.hey_load import hey_args, parse_summary, run_hey
from tests.fixtures.recorder import Recorded, recording_server

# Trimmed from hey 0.1.4's output (the histogram and details left out).
SUMMARY = """
Summary:
  Total:\t2.0044 secs
  Slowest:\t0.0281 secs
  Fastest:\t0.0011 secs
  Average:\t0.0047 secs
  Requests/sec:\t406.1957

  Total data:\t783768 bytes
  Size/request:\t1921 bytes

Latency distribution:
  10% in 0.0024 secs
  50% in 0.0038 secs
  90% in 0.0079 secs
  99% in 0.0240 secs

Status code distribution:
  [200]\t800 responses
  [503]\t4 responses

Error distribution:
  [3]\tPost "http://127.0.0.1:1/get/data": dial tcp: connection refused
  [1]\tPost "http://127.0.0.1:1/get/data": context deadline exceeded
"""


def test_the_summary_counts_2xx_as_ok_and_the_rest_as_errors() -> None:
    result = parse_summary(SUMMARY, concurrency=8)
    assert (result.tool, result.concurrency, result.duration_s) == ("hey", 8, 2.0044)
    assert result.ok == 800
    assert result.errors == {"http_503": 4, "transport": 4}
    assert result.requests == 808
    assert result.throughput_rps == pytest.approx(800 / 2.0044)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == pytest.approx((3.8, 7.9, 24.0))
    assert (result.mean_ms, result.max_ms) == pytest.approx((4.7, 28.1))


def test_a_run_with_no_answer_has_no_latencies() -> None:
    text = "Summary:\n  Total:\t1.0000 secs\n\nError distribution:\n  [57]\tconnection refused\n"
    result = parse_summary(text, concurrency=1)
    assert (result.ok, result.errors, result.p50_ms) == (0, {"transport": 57}, None)


def test_output_without_a_summary_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no summary"):
        parse_summary("flag provided but not defined: -q2\n", concurrency=1)


def test_the_command_line_carries_method_body_and_headers() -> None:
    args = hey_args(
        "http://127.0.0.1:8080/get/data",
        "POST",
        {"table_names": ["t"], "limit": 10},
        concurrency=8,
        duration_s=2,
        timeout_s=30,
        headers={"x-api-key": "k"},
    )
    assert args == [
        *("-z", "2s", "-c", "8", "-t", "30", "-m", "POST"),
        *("-T", "application/json", "-d", '{"table_names": ["t"], "limit": 10}'),
        *("-H", "x-api-key: k"),
        "http://127.0.0.1:8080/get/data",
    ]


@pytest.mark.parametrize(
    ("body", "headers", "match"),
    [({"target_table": "t_{n}"}, {}, "needs wrk"), (None, {"x-api-key": "a\nb"}, "newline")],
)
def test_what_hey_cannot_send_is_refused(
    body: object | None, headers: dict[str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        hey_args(
            "http://x/", "POST", body, concurrency=1, duration_s=1, timeout_s=1, headers=headers
        )


@pytest.fixture
def recorder() -> Iterator[Recorded]:
    with recording_server() as recorded:
        yield recorded


@pytest.mark.skipif(shutil.which("hey") is None, reason="hey is not installed (make bench)")
def test_hey_sends_the_body_and_headers_and_its_answers_are_counted(recorder: Recorded) -> None:
    result = run_hey(
        recorder.url,
        "POST",
        {"table_names": ["t"]},
        concurrency=2,
        duration_s=1,
        headers={"x-api-key": "dmgw_secret-_0"},
    )
    assert result.ok >= 5
    assert result.ok == len(recorder.seen)
    assert set(recorder.seen) == {("dmgw_secret-_0", b'{"table_names": ["t"]}')}
