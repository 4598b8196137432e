"""The measurements that are not a throughput cell: big answers, memory, start-up.

Each runs requests one at a time: a 100k-row answer under load would measure the
machine's memory bandwidth, not the gateway, and start-up is a single event. ``headers``
are what every gateway call sends (a credential, with ``--policy``).
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import psycopg2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg2 import sql

from bench import limit
from bench.clients import Answer, GrpcCaller, http_call
from bench.grpc_load import SERVICE, request_factory
from bench.scenarios import LARGE_QUERY_TABLE, WORKFLOW_TARGET_PREFIX
from bench.stack import (
    Baseline,
    GatewayServer,
    free_port,
    gateway_env,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)
from datamorph.gateway.v1 import gateway_pb2 as pb

LARGE_QUERY = {"query": f"SELECT * FROM {LARGE_QUERY_TABLE}"}
LARGE_ROWS = 100_000
STREAM_ROWS = 1_000_000
STREAM_BATCH_ROWS = 1000  # the gateway's default STREAM_BATCH_ROWS
MIB = 1024 * 1024


def _rows_in(answer: Answer) -> tuple[int | None, bool | None]:
    body = answer.body if isinstance(answer.body, dict) else {}
    rows = body.get("row_count")
    return (int(rows) if rows is not None else None), body.get("truncated")


def _memory_run(pids: list[int], call: Any, reps: int) -> dict[str, Any]:
    """Time `call` `reps` times; the processes' peak RSS over their RSS before each call."""
    runs = []
    for _ in range(reps):
        before = max(rss_bytes(p) for p in pids)
        resettable = reset_peak_rss(pids)
        try:
            answer: Answer = call()
        except (OSError, RuntimeError) as exc:  # a refused or dropped connection, a timeout
            answer = Answer(False, type(exc).__name__, str(exc), 0, 0.0)
        peak = peak_rss_bytes(pids)
        rows, truncated = _rows_in(answer)
        runs.append(
            {
                "ok": answer.ok,
                "status": answer.status,
                "seconds": answer.elapsed_s,
                "bytes": answer.size_bytes,
                "rows": rows,
                "truncated": truncated,
                "rss_before_mib": before / MIB,
                "peak_rss_mib": peak / MIB,
                "rss_growth_mib": (peak - before) / MIB if resettable else None,
            }
        )
    return _summary(runs)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["ok"]]
    out: dict[str, Any] = {"runs": runs, "errors": len(runs) - len(ok)}
    if ok:
        out["median_s"] = statistics.median(r["seconds"] for r in ok)
        growth = [r["rss_growth_mib"] for r in ok if r.get("rss_growth_mib") is not None]
        if growth:
            out["max_rss_growth_mib"] = max(growth)
            out["max_peak_rss_mib"] = max(r["peak_rss_mib"] for r in ok)
    return out


def large_query(
    *,
    gateway: GatewayServer,
    rest: tuple[str, int],
    baseline: Baseline | None,
    dsn: str,
    reps: int,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """ExecuteQuery of 100k rows on every system: time, bytes and the server's peak RSS."""
    out: dict[str, Any] = {"query": LARGE_QUERY["query"], "rows": LARGE_ROWS}
    caller = GrpcCaller(gateway.address, headers)
    try:
        out["gateway/grpc"] = _memory_run(
            [gateway.pid], lambda: caller.call("ExecuteQuery", LARGE_QUERY), reps
        )
    finally:
        caller.close()
    out["gateway/rest"] = _memory_run(
        [gateway.pid],
        lambda: http_call(rest[0], rest[1], "POST", "/execute/query", LARGE_QUERY, headers=headers),
        reps,
    )
    if baseline is not None:
        out["baseline/rest"] = _memory_run(
            baseline.worker_pids(),
            lambda: http_call("127.0.0.1", baseline.port, "POST", "/execute/query", LARGE_QUERY),
            reps,
        )
    conn = limit.connect(dsn)
    try:
        work = limit.execute_query(LARGE_QUERY["query"])
        runs = []
        for _ in range(reps):
            start = time.perf_counter()
            work(conn)
            runs.append({"ok": True, "seconds": time.perf_counter() - start, "rows": LARGE_ROWS})
        out["limit/sql"] = _summary(runs)
    finally:
        conn.close()
    return out


def _serving(port: int) -> bool:
    """Whether grpc.health.v1 says SERVING on 127.0.0.1:`port` right now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _large_query_once(
    server: GatewayServer, address: str, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    caller = GrpcCaller(address, headers)
    try:
        return _memory_run([server.pid], lambda: caller.call("ExecuteQuery", LARGE_QUERY), 1)
    finally:
        caller.close()


def startup(
    dsn: str,
    run_dir: Path,
    reps: int,
    timeout_s: float = 60.0,
    *,
    env: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Seconds from spawning ``python -m datamorph_gateway`` (with `env` besides its
    database) to SERVING, database already up.

    The last gateway, which runs with the default limits, is then asked for the 100k-row
    query, to record what a default deployment does with it.
    """
    times: list[float] = []
    default_limits: dict[str, Any] = {}
    for i in range(reps):
        port = free_port()
        server = GatewayServer(
            gateway_env(dsn, GRPC_PORT=str(port), **(env or {})), run_dir / f"startup{i}.log"
        )
        start = time.perf_counter()
        server.launch()
        try:
            while not _serving(port):
                if server.process is None or server.process.poll() is not None:
                    raise RuntimeError(f"the gateway exited at start-up; see {server.log_path}")
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(f"the gateway was not SERVING after {timeout_s:.0f} s")
                time.sleep(0.005)
            times.append(time.perf_counter() - start)
            if i == reps - 1:
                default_limits = _large_query_once(server, f"127.0.0.1:{port}", headers)
        finally:
            server.stop()
    return {
        "runs_s": times,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "default_limits_large_query": default_limits,
    }


def baseline_startup(dsn: str, run_dir: Path, reps: int) -> dict[str, Any]:
    """Seconds from spawning gunicorn to the first 200 from /health."""
    times = []
    for i in range(reps):
        sub = run_dir / f"baseline-startup{i}"
        sub.mkdir(parents=True, exist_ok=True)
        server = Baseline(dsn, sub)
        start = time.perf_counter()
        try:
            server.start()
            times.append(time.perf_counter() - start)
        finally:
            server.stop()
    return {"runs_s": times, "median_s": statistics.median(times), "max_s": max(times)}


def _stream_grpc(
    gateway: GatewayServer, query: str, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    payload = request_factory("StreamQuery", json.dumps({"query": query}))()
    channel = grpc.insecure_channel(gateway.address)
    try:
        stream = channel.unary_stream(f"/{SERVICE.full_name}/StreamQuery")
        start = time.perf_counter()
        messages = size = 0
        last = b""
        metadata = tuple((headers or {}).items()) or None
        for chunk in stream(payload, timeout=600, metadata=metadata):
            messages += 1
            size += len(chunk)
            last = chunk
        elapsed = time.perf_counter() - start
    finally:
        channel.close()
    final = pb.StreamQueryResponse()
    final.ParseFromString(last)
    return {
        "seconds": elapsed,
        "messages": messages,
        "bytes": size,
        "rows": int(final.rows_sent),
        "done": final.done,
    }


def _stream_rest(
    rest: tuple[str, int], query: str, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """POST /stream/query through Envoy, read as newline-delimited JSON to the last line."""
    connection = http.client.HTTPConnection(rest[0], rest[1], timeout=600)
    try:
        start = time.perf_counter()
        connection.request(
            "POST",
            "/stream/query",
            body=json.dumps({"query": query}),
            headers={"content-type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        messages = size = 0
        last = b""
        for line in response:
            if line.strip():
                messages += 1
                last = line
            size += len(line)
        elapsed = time.perf_counter() - start
    finally:
        connection.close()
    final = json.loads(last) if last else {}
    return {
        "seconds": elapsed,
        "status": response.status,
        "messages": messages,
        "bytes": size,
        "rows": int(final.get("rows_sent", 0)),
        "done": bool(final.get("done")),
    }


def _stream_limit(dsn: str, query: str, batch_rows: int) -> dict[str, Any]:
    """The same rows through a server-side cursor in the same batches, straight to Python."""
    conn = limit.connect(dsn)
    try:
        start = time.perf_counter()
        rows = 0
        with conn.cursor(name="bench_stream") as cur:
            cur.itersize = batch_rows
            cur.execute(query)
            while batch := cur.fetchmany(batch_rows):
                rows += len(batch)
        conn.commit()
        return {"seconds": time.perf_counter() - start, "rows": rows, "done": True}
    finally:
        conn.close()


def streaming(
    *,
    gateway: GatewayServer,
    envoy_pid: int,
    rest: tuple[str, int],
    dsn: str,
    table: str | None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """10^6 rows through StreamQuery (gRPC, and NDJSON through Envoy): time and RSS growth.

    The gateway's RSS is what the target bounds; Envoy's is recorded beside it for REST,
    since a transcoder that buffered the stream would hold it all there instead.
    """
    if "StreamQuery" not in SERVICE.methods_by_name:
        return {"available": False, "note": "StreamQuery is not in the gateway's API"}
    if table is None:
        return {"available": False, "note": "the 10^6-row table was not loaded"}
    query = f"SELECT * FROM {table}"
    out: dict[str, Any] = {"available": True, "query": query}
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "gateway/grpc": lambda: _stream_grpc(gateway, query, headers),
        "gateway/rest": lambda: _stream_rest(rest, query, headers),
    }
    for key, run in runs.items():
        pids = [gateway.pid] + ([envoy_pid] if key == "gateway/rest" and envoy_pid else [])
        before = {pid: rss_bytes(pid) for pid in pids}
        reset_peak_rss(pids)
        try:
            entry = run()
        except (grpc.RpcError, OSError, ValueError) as exc:
            out[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc!s:.300}"}
            continue
        entry["ok"] = entry["done"] and entry["rows"] == STREAM_ROWS
        entry["rss_growth_mib"] = (peak_rss_bytes([gateway.pid]) - before[gateway.pid]) / MIB
        if envoy_pid in before:
            entry["envoy_rss_growth_mib"] = (peak_rss_bytes([envoy_pid]) - before[envoy_pid]) / MIB
        out[key] = entry
    out["limit/sql"] = _stream_limit(dsn, query, STREAM_BATCH_ROWS)
    return out


def drop_workflow_tables(dsn: str) -> int:
    """Drop the tables StartWorkflow scenarios created; how many there were."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE tablename LIKE %s",
                (WORKFLOW_TARGET_PREFIX.replace("_", "\\_") + "%",),
            )
            tables = cur.fetchall()
            for schema, table in tables:
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, table)))
        return len(tables)
    finally:
        conn.close()
