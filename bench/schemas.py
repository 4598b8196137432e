"""``python -m bench.schemas``: where a warm GetSchemas of the bench's 50 tables spends its time,
in process.

Per call, best (and median) of several rounds, each the mean of many calls, so that other
work on the machine shows as a spread rather than as the figure:

- ``statement``: the warm call's freshness check alone, on a connection already held (roles.sql's
  DDL counter, ``catalog.counted``; the whole-request digest, ``catalog.check``; the
  per-relation stamps where the code has neither), wall time and the backend's own CPU time
  (``/proc/<pid>/schedstat``);
- ``stamps``: the per-relation stamps statement, what a call runs when its digest is new;
- ``servicer``: ``GatewayServicer.GetSchemas`` called directly: validation, the pool, the
  check, the cache and the answer's bytes, no network;
- ``build+serialize`` / ``join parts`` / ``kept whole``: the answer from 50 parts, as a
  message copied part by part and serialized, as joined bytes, and as kept bytes;
- ``gRPC``: a real channel to an in-process gateway, GetSchemas and Health (client and
  server share the process and its GIL, so these are higher than the bench's c=1 cells).

It needs the bench database (embedded under ``.data/bench`` as ``make bench`` leaves it, or
``DATABASE_URL``). Run against another checkout's code with
``PYTHONPATH=<checkout>/server/src python -m bench.schemas``: parts that code lacks are left
out. ``--against <checkout>/server/src`` instead serves GetSchemas of the 50 tables from two
gateway processes, this code's and that one's, each behind its own Envoy, and times them at
c=1 over gRPC and through Envoy with ``bench.alternate`` (one request at a time, in turn), so
both get the same seconds of a busy machine. Nothing here is shipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench import data
from bench.scenarios import scenarios
from bench.stack import Envoy, GatewayServer, free_port, gateway_env
from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.app import Gateway
from datamorph_gateway.config import Settings
from datamorph_gateway.db import catalog
from datamorph_gateway.db.names import parse_table_name

REPO = Path(__file__).resolve().parents[1]


class _Context:
    """The little of a ServicerContext that a direct call of a servicer method reads."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def time_remaining(self) -> float:
        return 30.0

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return True

    def auth_context(self) -> dict[str, Any]:
        return {}

    def peer_identities(self) -> None:
        return None

    def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(status)


def _oncpu_ns(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return None


Part = tuple[str, Callable[[], object], int, int | None]  # name, call, calls per round, pid


def _interleaved(parts: list[Part], rounds: int) -> list[tuple[str, dict[str, float]]]:
    """µs per call of each part: best and median of ``rounds`` means, the rounds of all parts
    in turn (so a burst of other work falls on all alike), and the backend ``pid``'s CPU."""
    wall: dict[str, list[float]] = {name: [] for name, *_ in parts}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in parts}
    for _, fn, _, _ in parts:
        fn()
    for _ in range(rounds):
        for name, fn, calls, pid in parts:
            before = _oncpu_ns(pid) if pid else None
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            wall[name].append((time.perf_counter() - start) / calls * 1e6)
            after = _oncpu_ns(pid) if pid else None
            if before is not None and after is not None:
                cpu[name].append((after - before) / calls / 1e3)
    rows = []
    for name, *_ in parts:
        row = {"best": min(wall[name]), "median": statistics.median(wall[name])}
        if cpu[name]:
            row["cpu_best"] = min(cpu[name])
        rows.append((name, row))
    return rows


def _wire(answer: Any) -> bytes:
    """The answer's bytes: as they are, or serialized as grpcio would (an older servicer)."""
    return answer if isinstance(answer, bytes) else answer.SerializeToString()


def measure(
    dsn: str, gateway_settings: dict[str, str], rounds: int
) -> list[tuple[str, dict[str, float]]]:
    names = list(data.SCHEMA_TABLES)
    parsed = [parse_table_name(n) for n in names]
    settings = Settings.from_flat(
        grpc_port=0, database_url=dsn, db_pool_max=4,
        **{k.lower(): v for k, v in gateway_settings.items()},
    )  # fmt: skip
    gateway = Gateway(settings)
    try:
        servicer = gateway.servicer
        request = pb.GetSchemasRequest(table_names=names)
        context = _Context()
        servicer.GetSchemas(request, context)  # described and kept
        gateway.start()
        with (
            gateway.database.pool.connection(10, reserved=True) as conn,
            grpc.insecure_channel(gateway.address) as channel,
        ):
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_catalog.pg_backend_pid()")
                    row = cur.fetchone()
                pid = int(row[0]) if row else None
                parts: list[Part] = []
                check = getattr(catalog, "check", None)
                if check is not None:
                    parts.append(
                        ("statement (digest)", lambda: check(conn, parsed, names), 50, pid)
                    )
                counted = getattr(catalog, "counted", None)
                if counted is not None:
                    parts.append(
                        ("statement (counter)", lambda: counted(conn, parsed, names), 50, pid)
                    )
                stamps = "statement (stamps)" if check is None else "stamps"
                parts.append((stamps, lambda: catalog.stamps(conn, parsed, names), 50, pid))
                parts.append(
                    ("servicer", lambda: _wire(servicer.GetSchemas(request, context)), 50, None)
                )
                parts.extend(_assembly(gateway, parsed, names))
                stub = pb_grpc.DataMorphGatewayStub(channel)
                health = pb.HealthRequest()
                parts.append(("gRPC GetSchemas", lambda: stub.GetSchemas(request), 50, None))
                parts.append(("gRPC Health", lambda: stub.Health(health), 50, None))
                return _interleaved(parts, rounds)
            finally:
                conn.autocommit = False
    finally:
        gateway.stop(0)


def _assembly(gateway: Gateway, parsed: list[Any], names: list[str]) -> list[Part]:
    try:
        from datamorph_gateway.schema_cache import response_bytes, table_schema
    except ImportError:
        return []
    tables = gateway.database.get_schemas(parsed, names, 10).tables
    messages = [table_schema(t) for t in tables if isinstance(t, catalog.TableDescription)]
    parts = {name: m.SerializeToString() for name, m in zip(names, messages, strict=True)}
    kept = {"answer": response_bytes("success", parts)}

    def build() -> bytes:
        response = pb.GetSchemasResponse(status="success")
        for name, message in zip(names, messages, strict=True):
            response.schemas[name].CopyFrom(message)
        return response.SerializeToString()

    return [
        ("build+serialize", build, 200, None),
        ("join parts", lambda: response_bytes("success", parts), 200, None),
        ("kept whole", lambda: kept["answer"], 200, None),
    ]


def against(dsn: str, settings: dict[str, str], other_src: str, seconds: int) -> dict[str, Any]:
    """p50 (and more) of GetSchemas(50) at c=1 from this code and ``other_src``'s, in turn."""
    [scenario] = [s for s in scenarios() if s.name == "get_schemas_50"]
    run_dir = REPO / ".data" / "bench" / "runs" / f"schemas-{time.strftime('%Y%m%dT%H%M%S')}"
    run_dir.mkdir(parents=True)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        systems: dict[str, tuple[str, str]] = {}
        for name, src in (("this", ""), ("other", other_src)):
            env = gateway_env(dsn, **settings, METRICS_PORT=str(free_port()))
            if src:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
            gateway = GatewayServer(env, run_dir / f"gateway-{name}.log")
            stack.callback(gateway.stop)
            address = gateway.start()
            envoy = Envoy(run_dir / f"envoy-{name}", address)
            stack.callback(envoy.stop)
            host, port = envoy.start()
            systems[name] = (address, f"{host}:{port}")
        for transport in ("grpc", "rest"):
            spec = {
                "transport": transport,
                "method": scenario.rpc if transport == "grpc" else scenario.rest_method,
                "path": scenario.rest_path,
                "request": scenario.grpc_request if transport == "grpc" else scenario.body,
                "duration_s": seconds,
                "max_requests": 100_000,
                "timeout_s": 30,
                "systems": [
                    {
                        "name": name,
                        "address": grpc_at if transport == "grpc" else rest_at,
                        "headers": {},
                    }
                    for name, (grpc_at, rest_at) in systems.items()
                ],
            }
            done = subprocess.run(
                [sys.executable, "-m", "bench.alternate"],
                input=json.dumps(spec),
                capture_output=True,
                text=True,
                timeout=seconds + 120,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"bench.alternate failed: {done.stderr.strip()[-2000:]}")
            results[transport] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schemas", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--against", metavar="SRC", help="another checkout's server/src")
    parser.add_argument("--seconds", type=int, default=20, help="with --against, per transport")
    args = parser.parse_args(argv)
    db = data.open_database(REPO / ".data" / "bench", os.environ.get("DATABASE_URL", ""))
    try:
        data.ensure_dataset(db.dsn, ())
        if args.against:
            results = against(db.dsn, db.gateway_settings, args.against, args.seconds)
        else:
            rows = measure(db.dsn, db.gateway_settings, args.rounds)
    finally:
        db.stop()
    if args.against:
        print(f"python -m bench.schemas --against, {time.strftime('%Y-%m-%d %H:%M')}, c=1\n")
        print("| transport | code | requests | p50 | p90 | p99 |")
        print("|---|---|---:|---:|---:|---:|")
        for transport, by_name in results.items():
            for name, cell in by_name.items():
                print(
                    f"| {transport} | {name} | {cell['requests']} | {cell['p50_ms']:.2f} ms"
                    f" | {cell['p90_ms']:.2f} ms | {cell['p99_ms']:.2f} ms |"
                )
        return 0
    print(f"python -m bench.schemas, {time.strftime('%Y-%m-%d %H:%M')}, 50 tables, µs per call\n")
    print("| part | best | median | backend CPU (best) |")
    print("|---|---:|---:|---:|")
    for name, row in rows:
        cpu = f"{row['cpu_best']:,.0f}" if "cpu_best" in row else "·"
        print(f"| {name} | {row['best']:,.1f} | {row['median']:,.1f} | {cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
