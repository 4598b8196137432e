"""``python -m bench.schemas``: where a warm GetSchemas of the bench's 50 tables spends its time,
in process.

Per call, best (and median) of several rounds, each the mean of many calls, so that other
work on the machine shows as a spread rather than as the figure:

- ``statement``: the warm call's freshness check alone, on a connection already held (the
  whole-request digest, ``catalog.check``; the per-relation stamps where the code has no
  digest), wall time and the backend's own CPU time (``/proc/<pid>/schedstat``);
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
out. Nothing here is shipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench import data
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


def _timed(
    fn: Callable[[], object], calls: int, rounds: int, pid: int | None = None
) -> dict[str, float]:
    """µs per call: best and median of ``rounds`` means, and the backend ``pid``'s CPU."""
    wall: list[float] = []
    cpu: list[float] = []
    fn()
    for _ in range(rounds):
        before = _oncpu_ns(pid) if pid else None
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        wall.append((time.perf_counter() - start) / calls * 1e6)
        after = _oncpu_ns(pid) if pid else None
        if before is not None and after is not None:
            cpu.append((after - before) / calls / 1e3)
    out = {"best": min(wall), "median": statistics.median(wall)}
    if cpu:
        out["cpu_best"] = min(cpu)
    return out


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
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        servicer = gateway.servicer
        request = pb.GetSchemasRequest(table_names=names)
        context = _Context()
        servicer.GetSchemas(request, context)  # described and kept
        with gateway.database.pool.connection(10, reserved=True) as conn:
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_catalog.pg_backend_pid()")
                    row = cur.fetchone()
                pid = int(row[0]) if row else None
                check = getattr(catalog, "check", None)
                if check is not None:
                    rows.append(
                        (
                            "statement (digest)",
                            _timed(lambda: check(conn, parsed, names), 50, rounds, pid),
                        )
                    )
                stamps = "statement (stamps)" if check is None else "stamps"
                rows.append(
                    (stamps, _timed(lambda: catalog.stamps(conn, parsed, names), 50, rounds, pid))
                )
            finally:
                conn.autocommit = False
        rows.append(
            ("servicer", _timed(lambda: _wire(servicer.GetSchemas(request, context)), 50, rounds))
        )
        rows.extend(_assembly(gateway, parsed, names, rounds))
        gateway.start()
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.DataMorphGatewayStub(channel)
            rows.append(("gRPC GetSchemas", _timed(lambda: stub.GetSchemas(request), 50, rounds)))
            health = pb.HealthRequest()
            rows.append(("gRPC Health", _timed(lambda: stub.Health(health), 50, rounds)))
    finally:
        gateway.stop(0)
    return rows


def _assembly(
    gateway: Gateway, parsed: list[Any], names: list[str], rounds: int
) -> list[tuple[str, dict[str, float]]]:
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
        ("build+serialize", _timed(build, 200, rounds)),
        ("join parts", _timed(lambda: response_bytes("success", parts), 200, rounds)),
        ("kept whole", _timed(lambda: kept["answer"], 200, rounds)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schemas", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    db = data.open_database(REPO / ".data" / "bench", os.environ.get("DATABASE_URL", ""))
    try:
        data.ensure_dataset(db.dsn, ())
        rows = measure(db.dsn, db.gateway_settings, args.rounds)
    finally:
        db.stop()
    print(f"python -m bench.schemas, {time.strftime('%Y-%m-%d %H:%M')}, 50 tables, µs per call\n")
    print("| part | best | median | backend CPU (best) |")
    print("|---|---:|---:|---:|")
    for name, row in rows:
        cpu = f"{row['cpu_best']:,.0f}" if "cpu_best" in row else "·"
        print(f"| {name} | {row['best']:,.1f} | {row['median']:,.1f} | {cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
