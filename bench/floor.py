"""The transport floor: what a call costs before the gateway does any work.

``python -m bench.floor`` serves a bare gRPC server built as the gateway builds its own
(grpcio's synchronous server, the same thread pool and channel options) whose only method,
DataMorphGateway/Health, answers a canned ``HealthResponse``: no database, no logging, no
validation. Measured at c=1 with the same load clients as the gateway (the grpc.aio
client natively, wrk through an Envoy rendered by the same sidecar code), it is the part
of the overhead target that any Python gRPC service pays on this machine; the gateway's
own work is its overhead minus this floor. Lives only under ``bench/``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.app import MAX_RECEIVE_BYTES, MAX_SEND_BYTES, SERVICE_NAME

_ANSWER = pb.HealthResponse(status="healthy", version="floor")
_ANSWER.checks["database"].status = "healthy"
CANNED = _ANSWER.SerializeToString()


def _health(request: bytes, context: grpc.ServicerContext) -> bytes:
    return CANNED


def serve(port: int, workers: int = 32) -> None:
    server = grpc.server(
        ThreadPoolExecutor(workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ],
    )
    # Requests and answers stay bytes: no protobuf work on either side of the handler.
    handler: Any = grpc.unary_unary_rpc_method_handler(_health)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE_NAME, {"Health": handler})]
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    # The same ready line as the gateway's, so bench.stack starts both alike.
    print(f"floor: serving gRPC on 127.0.0.1:{bound}", flush=True)
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
