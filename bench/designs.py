"""``python -m bench.designs``: server designs for one database call, side by side.

Before the gateway's server design was kept, these were measured: the same handler (one
``SET LOCAL statement_timeout = …; SELECT 1``, as the gateway's Health sends) on

- ``sync``: grpcio's synchronous server, a blocking psycopg2 call on the worker thread
  (the gateway's design);
- ``aio-executor``: grpc.aio, the same blocking call in ``run_in_executor``;
- ``aio-asyncpg``: grpc.aio with asyncpg, no thread at all.

Each serves from its own process and is loaded with the bench's grpc.aio client at c=1 and
c=8; the table gives p50, throughput and the server's CPU per call. It needs asyncpg
(``pip install -r bench/requirements.txt``) and uses the bench database (embedded under
``.data/bench``, or ``DATABASE_URL``). Nothing here is shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import psutil

from bench import data
from bench.stack import REPO, free_port, stop_group

DESIGNS = ("sync", "aio-executor", "aio-asyncpg")
SERVICE = "datamorph.gateway.v1.DataMorphGateway"
QUERY = "SET LOCAL statement_timeout = 30000; SELECT 1"
ANSWER = b"\x0a\x07healthy"  # HealthResponse(status="healthy")


def _handlers(behavior: Any) -> list[grpc.GenericRpcHandler]:
    method = grpc.unary_unary_rpc_method_handler(behavior)
    return [grpc.method_handlers_generic_handler(SERVICE, {"Health": method})]


def _blocking_call(dsn: str) -> Any:
    import psycopg2

    local = threading.local()

    def call() -> bytes:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg2.connect(dsn)
            conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(QUERY)
            cur.fetchone()
        return ANSWER

    return call


def serve(design: str, dsn: str, port: int) -> None:
    if design == "sync":
        call = _blocking_call(dsn)
        server = grpc.server(ThreadPoolExecutor(32))
        server.add_generic_rpc_handlers(_handlers(lambda request, context: call()))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        print("ready", flush=True)
        server.wait_for_termination()
        return
    asyncio.run(_serve_aio(design, dsn, port))


async def _serve_aio(design: str, dsn: str, port: int) -> None:
    if design == "aio-executor":
        call = _blocking_call(dsn)
        pool = ThreadPoolExecutor(32)

        async def behavior(request: bytes, context: Any) -> bytes:
            return await asyncio.get_running_loop().run_in_executor(pool, call)
    else:
        import asyncpg

        connections = await asyncpg.create_pool(min_size=8, max_size=16, **_asyncpg_args(dsn))

        async def behavior(request: bytes, context: Any) -> bytes:
            async with connections.acquire() as conn:
                await conn.execute(QUERY)
            return ANSWER

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(_handlers(behavior))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def _asyncpg_args(dsn: str) -> dict[str, Any]:
    """asyncpg takes URLs only; the bench's DSN may be libpq's key=value form."""
    from psycopg2.extensions import parse_dsn

    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    given = parse_dsn(dsn)
    args: dict[str, Any] = {
        ours: given[theirs] for theirs, ours in names.items() if theirs in given
    }
    args["database"] = given.get("dbname", "postgres")
    if "port" in args:
        args["port"] = int(args["port"])
    return args


def _measure(design: str, dsn: str, seconds: int) -> list[dict[str, Any]]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.designs",
            "--serve",
            design,
            "--dsn",
            dsn,
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the {design} server did not start")
        server = psutil.Process(process.pid)
        rows = []
        for concurrency in (1, 8):
            before = server.cpu_times()
            done = subprocess.run(
                [
                    *(sys.executable, "-m", "bench.grpc_load", "--target", f"127.0.0.1:{port}"),
                    *("--method", "Health", "--concurrency", str(concurrency)),
                    *("--duration", str(seconds)),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            after = server.cpu_times()
            result = json.loads(done.stdout.strip().splitlines()[-1])
            cpu = (after.user + after.system) - (before.user + before.system)
            rows.append(
                {
                    "design": design,
                    "concurrency": concurrency,
                    "p50_ms": result["p50_ms"],
                    "rps": result["throughput_rps"],
                    "errors": result["error_count"],
                    "server_cpu_ms_per_call": 1000 * cpu / max(result["ok"], 1),
                }
            )
        return rows
    finally:
        stop_group(process, timeout_s=10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.designs", description=__doc__)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--serve", choices=DESIGNS, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.dsn, args.port)
        return 0
    db = data.open_database(REPO / ".data" / "bench", os.environ.get("DATABASE_URL", ""))
    try:
        rows = [row for design in DESIGNS for row in _measure(design, db.dsn, args.seconds)]
    finally:
        db.stop()
    print(f"python -m bench.designs, {time.strftime('%Y-%m-%d')}, {args.seconds} s per cell\n")
    print("| design | c | p50 | rps | server CPU per call | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['design']} | {row['concurrency']} | {row['p50_ms']:.2f} ms | {row['rps']:,.0f}"
            f" | {row['server_cpu_ms_per_call']:.2f} ms | {row['errors']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
