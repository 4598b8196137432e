"""REST load with hey: the second load generator for the GetData throughput comparison.

wrk (``bench.rest_load``) is C and event-driven and takes little CPU from the system under
test; hey is Go, one goroutine per worker over ``net/http`` with keep-alive, and takes more.
An independent harness measured the gateway-vs-Flask ratio with ``hey -c 8`` lower than
``make bench`` did with wrk, so the issue-17 target is judged with both (docs/benchmarks.md).

hey is bounded in time only (``-z``; with ``-z`` it ignores ``-n``), prints a text summary,
and counts an answer of any status as a response: we parse the summary, count answers
other than 2xx and transport errors as errors, and read throughput as the successful
answers over hey's own total time. Its percentiles have hey's resolution (0.1 ms).
Headers (a credential) go on the command line, so during a run they are visible to this
machine's users in the process list, as wrk's script would be to this user.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping

from bench.loadstats import LoadResult

_TOTAL = re.compile(r"^\s*Total:\s+([0-9.]+) secs", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(\d+)% in ([0-9.]+) secs", re.MULTILINE)
_STATUS = re.compile(r"^\s*\[(\d{3})\]\s+(\d+) responses", re.MULTILINE)
_ERRORS = re.compile(r"^Error distribution:\n((?:\s+\[\d+\].*\n?)*)", re.MULTILINE)
_ERROR_LINE = re.compile(r"^\s+\[(\d+)\]\s+(.*)$", re.MULTILINE)
_AVERAGE = re.compile(r"^\s*Average:\s+([0-9.]+) secs", re.MULTILINE)
_SLOWEST = re.compile(r"^\s*Slowest:\s+([0-9.]+) secs", re.MULTILINE)


class HeyMissing(RuntimeError):
    """hey is not installed; `make bench` installs it (Debian package `hey`)."""


def hey_binary() -> str:
    path = shutil.which("hey")
    if path is None:
        raise HeyMissing("hey is not installed: run `apt-get install -y hey` (or `make bench`)")
    return path


def hey_args(
    url: str,
    method: str,
    body: object | None,
    *,
    concurrency: int,
    duration_s: int,
    timeout_s: int,
    headers: Mapping[str, str] | None = None,
) -> list[str]:
    """hey's command line for one run (without the binary)."""
    args = ["-z", f"{duration_s}s", "-c", str(concurrency), "-t", str(timeout_s), "-m", method]
    if body is not None:
        text = json.dumps(body)
        if "{n}" in text:
            raise ValueError("hey sends one body for every request: a '{n}' template needs wrk")
        args += ["-T", "application/json", "-d", text]
    for name, value in (headers or {}).items():
        if "\n" in name or "\n" in value or "\r" in name or "\r" in value:
            raise ValueError("a header for hey holds a newline")
        args += ["-H", f"{name}: {value}"]
    return [*args, url]


def parse_summary(text: str, *, concurrency: int) -> LoadResult:
    """A LoadResult from hey's text summary: 2xx answers are ok, the rest are errors."""
    total = _TOTAL.search(text)
    if total is None:
        raise RuntimeError(f"hey printed no summary:\n{text[-2000:]}")
    ok = 0
    errors: dict[str, int] = {}
    for status, count in _STATUS.findall(text):
        if status.startswith("2"):
            ok += int(count)
        else:
            errors[f"http_{status}"] = errors.get(f"http_{status}", 0) + int(count)
    block = _ERRORS.search(text)
    if block is not None:
        for count, _message in _ERROR_LINE.findall(block.group(1)):
            errors["transport"] = errors.get("transport", 0) + int(count)
    result = LoadResult(
        tool="hey",
        concurrency=concurrency,
        duration_s=float(total.group(1)),
        requests=ok + sum(errors.values()),
        ok=ok,
        errors=errors,
    )
    percentiles = {int(q): _ms(s) for q, s in _PERCENTILE.findall(text)}
    if ok and percentiles:
        result.p50_ms = percentiles.get(50)
        result.p90_ms = percentiles.get(90)
        result.p99_ms = percentiles.get(99)
        average, slowest = _AVERAGE.search(text), _SLOWEST.search(text)
        result.mean_ms = _ms(average.group(1)) if average else None
        result.max_ms = _ms(slowest.group(1)) if slowest else None
    return result


def _ms(seconds: str) -> float:
    """hey's seconds (4 decimals) as milliseconds, without float noise."""
    return round(float(seconds) * 1000, 1)


def run_hey(
    url: str,
    method: str,
    body: object | None,
    *,
    concurrency: int,
    duration_s: int,
    timeout_s: int = 30,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Load `url` with `concurrency` hey workers for `duration_s`."""
    args = hey_args(
        url,
        method,
        body,
        concurrency=concurrency,
        duration_s=duration_s,
        timeout_s=timeout_s,
        headers=headers,
    )
    completed = subprocess.run(
        [hey_binary(), *args],
        capture_output=True,
        text=True,
        timeout=duration_s + timeout_s + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"hey failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_summary(completed.stdout, concurrency=concurrency)
