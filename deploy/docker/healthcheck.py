"""Container health check: ask the gateway's ``grpc.health.v1`` service on this host.

    python /opt/datamorph/healthcheck.py           # exit 0 only when SERVING
    python /opt/datamorph/healthcheck.py --alive   # exit 0 when it answers at all

The default is readiness: SERVING means the database answers and the process is not
draining, which is what compose's ``depends_on: service_healthy`` should wait for.
``--alive`` is liveness: ECS replaces a task whose essential container turns unhealthy, and a
database outage would then replace every task while restarting mends nothing
(docs/operations.md, "Supervising it in production"); a process that answers NOT_SERVING is
alive. The port is ``GRPC_PORT`` (50051); with ``TLS_CERT_FILE`` set the check speaks TLS,
trusting that certificate as Envoy does, and presents it under mTLS (``TLS_CLIENT_CA_FILE``).
It lives in deploy/ because the gateway has no health command of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(address: str, tls_name: str) -> grpc.Channel:
    cert = os.environ.get("TLS_CERT_FILE", "")
    if not cert:
        return grpc.insecure_channel(address)
    chain = Path(cert).read_bytes()
    key = None
    if os.environ.get("TLS_CLIENT_CA_FILE"):
        key = Path(os.environ["TLS_KEY_FILE"]).read_bytes()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=chain, private_key=key, certificate_chain=chain if key else None
    )
    return grpc.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", tls_name)]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alive", action="store_true", help="NOT_SERVING passes too")
    parser.add_argument("--address", default=f"127.0.0.1:{os.environ.get('GRPC_PORT', '50051')}")
    parser.add_argument("--service", default="", help="health service name (default: the server)")
    parser.add_argument("--timeout-s", type=float, default=2.0)
    parser.add_argument(
        "--tls-name", default="localhost", help="a name TLS_CERT_FILE's certificate holds"
    )
    args = parser.parse_args(argv)
    with _channel(args.address, args.tls_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout_s
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if answer.status == health_pb2.HealthCheckResponse.SERVING or args.alive:
        print(status)
        return 0
    print(f"unhealthy: {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
