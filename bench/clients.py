"""Single calls to each system, for probes and the one-at-a-time measurements.

The load generators (wrk, bench.grpc_load, bench.limit) measure throughput; these
clients check that a scenario's answer is right before it is timed, and time the
requests that are too large to run under load (the 100k-row query, start-up).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from bench.grpc_load import SERVICE, channel_options, request_factory
from datamorph.gateway.v1 import gateway_pb2 as pb


@dataclass
class Answer:
    """One call's outcome: ok or not, a status to show, the body, its size and time."""

    ok: bool
    status: str
    body: Any
    size_bytes: int
    elapsed_s: float


def http_call(
    host: str,
    port: int,
    method: str,
    path: str,
    body: object | None,
    timeout_s: float = 60.0,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """A REST call with `headers`; the clock stops when the last byte is read, before
    JSON parsing."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"content-type": "application/json"} if data is not None else {}
    sent.update(headers or {})
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        start = time.perf_counter()
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - start
    finally:
        connection.close()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode("utf-8", "replace")[:500]
    ok = response.status == 200 and isinstance(parsed, dict)
    ok = ok and parsed.get("status") in ("success", "healthy")
    return Answer(ok, f"HTTP {response.status}", parsed, len(raw), elapsed)


class GrpcCaller:
    """Unary calls to the gateway on one channel, each with `metadata`; answers parsed
    after the clock stops."""

    def __init__(self, target: str, metadata: Mapping[str, str] | None = None) -> None:
        self._metadata = tuple((metadata or {}).items()) or None
        self._channel = grpc.insecure_channel(target, options=channel_options(target))

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: dict[str, Any], timeout_s: float = 60.0) -> Answer:
        payload = request_factory(method, json.dumps(request))()
        stub = self._channel.unary_unary(f"/{SERVICE.full_name}/{method}")
        start = time.perf_counter()
        try:
            raw: bytes = stub(payload, timeout=timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            elapsed = time.perf_counter() - start
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return Answer(False, code.name, details, 0, elapsed)
        elapsed = time.perf_counter() - start
        output = SERVICE.methods_by_name[method].output_type
        message = pb.__dict__[output.name]()
        message.ParseFromString(raw)
        body = json_format.MessageToDict(message, preserving_proto_field_name=True)
        return Answer(True, "OK", body, len(raw), elapsed)
