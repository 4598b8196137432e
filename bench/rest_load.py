"""REST load with wrk: bounded in time (``-d``) and in count (a Lua cap per thread).

wrk is C and event-driven, so on this 2-core machine it takes less CPU away from the
system under test than any Python client could. A Lua script sets the method, the JSON
body and any extra headers (an ``x-api-key`` or ``authorization`` credential), stops each
thread after its share of the request cap, rebuilds the body per request when it holds
``{n}`` (a unique token, for StartWorkflow's target table), and prints the summary as one
JSON line that we parse. The script lives in a private temporary directory, so a
credential in it is readable by this user only.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from bench.loadstats import LoadResult

_MARK = "BENCH_JSON "

_SCRIPT = """
local template = [==[%(body)s]==]
local unique = %(unique)s
local per_thread = %(per_thread)d
local run = "%(run)s"
wrk.method = "%(method)s"
%(headers)s
if template ~= "" then
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = template
end
local threads = {}
local sent, answered, prefix = 0, 0, ""

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  prefix = run .. "_" .. tostring(tid)
end

if unique then
  function request()
    sent = sent + 1
    local body = string.gsub(template, "{n}", prefix .. "_" .. sent)
    return wrk.format(nil, nil, nil, body)
  end
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= per_thread then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"duration_us": %%d, "requests": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50": %%d, "p90": %%d, ' ..
    '"p99": %%d, "mean": %%f, "max": %%d}\\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


class WrkMissing(RuntimeError):
    """wrk is not installed; `make bench` installs it (Debian package `wrk`)."""


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: run `apt-get install -y wrk` (or `make bench`)")
    return path


def _lua_string(text: str) -> str:
    """`text` as a Lua long string (no escapes inside one, so nothing to get wrong)."""
    if "]==]" in text or "\n" in text:
        raise ValueError("a header or body for wrk holds ']==]' or a newline")
    return f"[==[{text}]==]"


def _header_lines(headers: Mapping[str, str] | None) -> str:
    return "\n".join(
        f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}"  # "[[" opens a string
        for name, value in (headers or {}).items()
    )


def run_wrk(
    url: str,
    method: str,
    body: object | None,
    *,
    concurrency: int,
    duration_s: int,
    max_requests: int,
    timeout_s: int = 30,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Load `url` with `concurrency` connections for `duration_s` or `max_requests`;
    every request carries `headers` besides the method's own."""
    threads = min(concurrency, 2)
    template = "" if body is None else json.dumps(body)
    script = _SCRIPT % {
        "headers": _header_lines(headers),
        "body": template,
        "unique": "true" if "{n}" in template else "false",
        "per_thread": math.ceil(max_requests / threads),
        "run": uuid.uuid4().hex[:8],
        "method": method,
        "mark": _MARK,
    }
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script_path = Path(tmp) / "load.lua"
        script_path.write_text(script, encoding="utf-8")
        args = [
            wrk_binary(),
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{duration_s}s",
            "--timeout",
            f"{timeout_s}s",
            "-s",
            str(script_path),
            url,
        ]
        completed = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=duration_s + timeout_s + 30,
            check=False,
        )
    line = next((x for x in completed.stdout.splitlines() if x.startswith(_MARK)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    raw = json.loads(line[len(_MARK) :])
    errors = {
        kind: int(raw[kind]) for kind in ("connect", "read", "write", "timeout") if int(raw[kind])
    }
    if raw["status"]:
        errors["http_status"] = int(raw["status"])
    answered = int(raw["requests"])
    result = LoadResult(
        tool="wrk",
        concurrency=concurrency,
        duration_s=raw["duration_us"] / 1e6,
        requests=answered + sum(v for k, v in errors.items() if k != "http_status"),
        ok=answered - int(raw["status"]),
        errors=errors,
        stopped_by="count" if answered >= max_requests else "duration",
    )
    if answered:
        result.p50_ms = raw["p50"] / 1000
        result.p90_ms = raw["p90"] / 1000
        result.p99_ms = raw["p99"] / 1000
        result.mean_ms = raw["mean"] / 1000
        result.max_ms = raw["max"] / 1000
    return result
