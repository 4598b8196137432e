"""c=1 latency of several systems at once, request by request in turn.

``python -m bench.alternate`` sends one request at a time and cycles through the systems
(a, b, c, then b, c, a, then c, a, b...), so every system's p50 comes from the same
seconds of the same machine: a burst of other work on these shared cores falls on all of
them alike, which separate cells, however close in time, cannot promise. Nothing else
differs from a c=1 cell: one request in flight, a kept-alive connection per system
(HTTP/1.1 for REST, as wrk's; a grpc.aio channel for gRPC, as ``bench.grpc_load``'s). The
rotation gives every system every predecessor in turn.

The spec comes as JSON on stdin, so a credential in a header stays off the command line::

    {"transport": "grpc" | "rest", "method": "GetData" | "POST", "path": "/get/data",
     "request": {...}, "duration_s": 2, "max_requests": 100000, "timeout_s": 30,
     "systems": [{"name": "off", "address": "127.0.0.1:5001", "headers": {}}, ...]}

It prints one JSON object: a LoadResult per system name.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import sys
import time
from typing import Any

import grpc

from bench.grpc_load import MAX_MESSAGE_BYTES, SERVICE, request_factory
from bench.loadstats import LoadResult, summarize

Errors = dict[str, collections.Counter[str]]


def _orders(count: int) -> list[list[int]]:
    return [[(start + i) % count for i in range(count)] for start in range(count)]


def _results(
    tool: str,
    names: list[str],
    elapsed_s: float,
    latencies: dict[str, list[float]],
    errors: Errors,
    stopped_by: str,
) -> dict[str, LoadResult]:
    return {
        name: summarize(
            tool, 1, elapsed_s, latencies[name], dict(errors[name]), stopped_by=stopped_by
        )
        for name in names
    }


async def _grpc(spec: dict[str, Any]) -> dict[str, LoadResult]:
    systems = spec["systems"]
    names = [s["name"] for s in systems]
    make_request = request_factory(spec["method"], json.dumps(spec["request"]))
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    channels = [grpc.aio.insecure_channel(s["address"], options=options) for s in systems]
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors: Errors = {name: collections.Counter() for name in names}
    try:
        calls = []
        for channel, system in zip(channels, systems, strict=True):
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
            # Built once, as a careful client does: grpc.aio turns a tuple into a Metadata
            # on every call, about 15 µs of the client's own time that a c=1 comparison
            # would read as the credential's (docs/benchmarks.md, issue 11).
            headers = system["headers"]
            metadata = grpc.aio.Metadata(*headers.items()) if headers else None
            calls.append((channel.unary_unary(f"/{SERVICE.full_name}/{spec['method']}"), metadata))
        issued = 0
        start = time.perf_counter()
        deadline = start + spec["duration_s"]
        orders = _orders(len(systems))
        while issued < spec["max_requests"] and time.perf_counter() < deadline:
            for index in orders[issued // len(systems) % len(orders)]:
                call, metadata = calls[index]
                name = names[index]
                issued += 1
                began = time.perf_counter()
                try:
                    await call(make_request(), timeout=spec["timeout_s"], metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    errors[name][exc.code().name] += 1
                else:
                    latencies[name].append(time.perf_counter() - began)
        elapsed = time.perf_counter() - start
    finally:
        for channel in channels:
            await channel.close()
    stopped_by = "count" if issued >= spec["max_requests"] else "duration"
    return _results("grpc.aio alternating", names, elapsed, latencies, errors, stopped_by)


def _rest(spec: dict[str, Any]) -> dict[str, LoadResult]:
    systems = spec["systems"]
    names = [s["name"] for s in systems]
    body = None if spec["request"] is None else json.dumps(spec["request"]).encode()
    sent = [
        {**({"content-type": "application/json"} if body is not None else {}), **s["headers"]}
        for s in systems
    ]

    def connect(system: dict[str, Any]) -> http.client.HTTPConnection:
        host, _, port = system["address"].rpartition(":")
        return http.client.HTTPConnection(host, int(port), timeout=spec["timeout_s"])

    connections = [connect(s) for s in systems]
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors: Errors = {name: collections.Counter() for name in names}
    issued = 0
    start = time.perf_counter()
    deadline = start + spec["duration_s"]
    orders = _orders(len(systems))
    try:
        while issued < spec["max_requests"] and time.perf_counter() < deadline:
            for index in orders[issued // len(systems) % len(orders)]:
                name = names[index]
                issued += 1
                began = time.perf_counter()
                try:
                    connection = connections[index]
                    connection.request(spec["method"], spec["path"], body=body, headers=sent[index])
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    errors[name][type(exc).__name__] += 1
                    connections[index].close()
                    connections[index] = connect(systems[index])
                    continue
                if response.status == 200:
                    latencies[name].append(time.perf_counter() - began)
                else:
                    errors[name]["http_status"] += 1
        elapsed = time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    stopped_by = "count" if issued >= spec["max_requests"] else "duration"
    return _results("http.client alternating", names, elapsed, latencies, errors, stopped_by)


def run(spec: dict[str, Any]) -> dict[str, LoadResult]:
    """The spec's systems, measured in turn (see the module's docstring)."""
    if "{n}" in json.dumps(spec["request"]):
        raise ValueError("a request that must be unique per call is not supported here")
    if spec["transport"] == "grpc":
        return asyncio.run(_grpc(spec))
    return _rest(spec)


def main() -> int:
    results = run(json.load(sys.stdin))
    json.dump({name: result.to_dict() for name, result in results.items()}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
