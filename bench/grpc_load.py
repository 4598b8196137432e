"""A grpc.aio load client: `concurrency` callers on one channel, bounded in time and count.

Run as its own process (``python -m bench.grpc_load``) so that it shares no GIL with the
suite or the gateway; it prints one JSON LoadResult on stdout. Requests are serialized
once and answers are left as bytes, so the client spends its CPU on calls, not on
protobuf. A request containing ``{n}`` in its JSON is rebuilt for every call with a
unique token there (StartWorkflow needs a new target table each time). ``--metadata
KEY=VALUE`` (repeatable) is sent with every call, as a credential is (``x-api-key``,
``authorization``). A target naming several servers (``spread_target``: the gateway run as
several processes) gets its calls spread over them round-robin, as Envoy spreads REST.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from bench.loadstats import LoadResult, summarize
from datamorph.gateway.v1 import gateway_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["DataMorphGateway"]
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_SPREAD_SCHEME = "ipv4:"


def spread_target(addresses: Sequence[str]) -> str:
    """One target for the servers at `addresses` (IPv4 ``host:port``): one address as it is,
    several as gRPC's ``ipv4:a,b`` list, which `channel_options` spreads round-robin."""
    if len(addresses) == 1:
        return addresses[0]
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            host = ""
        if not host or not port.isdigit():
            raise ValueError(f"expected IPv4 host:port, got {address!r}")
    return _SPREAD_SCHEME + ",".join(addresses)


def channel_options(target: str) -> list[tuple[str, Any]]:
    """A channel's options: no message size limit that a bench answer could reach, and
    round-robin over every address when the target names several (pick-first would send
    every call to the first)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if target.startswith(_SPREAD_SCHEME) and "," in target:
        options.append(("grpc.lb_policy_name", "round_robin"))
    return options


def request_factory(method: str, request_json: str) -> Callable[[], bytes]:
    """Serialized requests for `method`; unique per call when the JSON holds ``{n}``."""
    descriptor = SERVICE.methods_by_name[method].input_type
    message_class = pb.__dict__[descriptor.name]

    def build(text: str) -> bytes:
        message: Message = message_class()
        json_format.Parse(text, message)
        return message.SerializeToString()

    if "{n}" not in request_json:
        fixed = build(request_json)
        return lambda: fixed
    run = uuid.uuid4().hex[:8]
    counter = itertools.count(1)
    return lambda: build(request_json.replace("{n}", f"{run}_{next(counter)}"))


async def run_load(
    target: str,
    method: str,
    request_json: str,
    *,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    timeout_s: float,
    metadata: Sequence[tuple[str, str]] = (),
) -> LoadResult:
    """Call `method` from `concurrency` coroutines until time or count runs out."""
    make_request = request_factory(method, request_json)
    # Built once: grpc.aio would build a Metadata from a tuple on every call (bench/alternate.py).
    sent_metadata = grpc.aio.Metadata(*metadata) if metadata else None
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    issued = 0
    async with grpc.aio.insecure_channel(target, options=channel_options(target)) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        call = channel.unary_unary(f"/{SERVICE.full_name}/{method}")
        start = time.perf_counter()
        deadline = start + duration_s

        async def caller() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                request = make_request()
                began = time.perf_counter()
                try:
                    await call(request, timeout=timeout_s, metadata=sent_metadata)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                else:
                    latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    stopped_by = "count" if issued >= max_requests else "duration"
    return summarize(
        "grpc.aio", concurrency, elapsed, latencies, dict(errors), stopped_by=stopped_by
    )


def metadata_item(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as gRPC metadata (keys are lower case on the wire)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r:.40}")
    return key.strip().lower(), value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_load", description=__doc__)
    parser.add_argument(
        "--target",
        required=True,
        help="host:port of the gRPC server, or ipv4:host:port,host:port,... (round-robin)",
    )
    parser.add_argument("--method", required=True, choices=sorted(SERVICE.methods_by_name))
    parser.add_argument("--request", default="{}", help="the request as proto3 JSON")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=30.0, help="per-call deadline, s")
    parser.add_argument(
        "--metadata",
        type=metadata_item,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata sent with every call, e.g. x-api-key=<key> (repeatable)",
    )
    args = parser.parse_args(argv)
    result = asyncio.run(
        run_load(
            args.target,
            args.method,
            args.request,
            concurrency=args.concurrency,
            duration_s=args.duration,
            max_requests=args.max_requests,
            timeout_s=args.timeout,
            metadata=args.metadata,
        )
    )
    json.dump(result.to_dict(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
