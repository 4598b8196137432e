"""``python -m datamorph_gateway.sidecar``: write Envoy's files for a sidecar deployment.

    python -m datamorph_gateway.sidecar --out-dir /etc/envoy --listen 0.0.0.0:8080 \
        --upstream 127.0.0.1:50051

writes ``envoy.yaml``, the ``transcoder.binpb`` it reads and the ``openapi.json`` it serves at
``GET /openapi.json``; run Envoy with
``envoy -c /etc/envoy/envoy.yaml``. ``--example`` prints the configuration committed as
envoy/envoy.yaml instead. The listener defaults to loopback; a listener other machines can
reach in clear gets a WARNING, on stderr and at the top of the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datamorph_gateway.sidecar.openapi import openapi_yaml
from datamorph_gateway.sidecar.options import SidecarOptions, cleartext_warning
from datamorph_gateway.sidecar.render import EXAMPLE_OPTIONS, example_config, write_config


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _admin(text: str) -> tuple[str, int] | str:
    """A Unix socket path (absolute), or HOST:PORT."""
    return text if text.startswith("/") else _address(text)


def main(argv: list[str] | None = None) -> int:
    defaults = EXAMPLE_OPTIONS
    parser = argparse.ArgumentParser(
        prog="python -m datamorph_gateway.sidecar", description=__doc__
    )
    parser.add_argument(
        "--out-dir", type=Path, help="where to write envoy.yaml, transcoder.binpb and openapi.json"
    )
    parser.add_argument(
        "--descriptor-source",
        type=Path,
        default=Path("envoy/gateway.binpb"),
        help="the descriptor set `make proto` writes (default: %(default)s)",
    )
    parser.add_argument(
        "--descriptor-path",
        help="where Envoy will read transcoder.binpb (default: its path in --out-dir)",
    )
    parser.add_argument(
        "--openapi-path",
        help="where Envoy will read openapi.json (default: its path in --out-dir)",
    )
    parser.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", defaults.listen_port),
        help="HOST:PORT of the REST/JSON and gRPC listener (default: 127.0.0.1:8080); "
        "0.0.0.0 serves other machines, in clear",
    )
    parser.add_argument(
        "--admin",
        type=_admin,
        default=defaults.admin_socket,
        help="the admin API: a Unix socket path (mode 0600) or a loopback HOST:PORT "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--upstream",
        type=_address,
        action="append",
        help="HOST:PORT of a gateway process; repeat it for several (processes on this host, "
        "or replicas); a DNS name stands for every address it resolves to "
        "(default: 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=0,
        help="how many gateway processes the upstreams stand for, when a DNS name resolves to "
        "several replicas (default: one per --upstream); sizes the circuit breakers",
    )
    parser.add_argument(
        "--gateway-max-workers",
        type=int,
        default=defaults.gateway_max_workers,
        help="the gateways' GRPC_MAX_WORKERS, the calls one process runs at once; sizes the "
        "circuit breakers and the retry budget (default: %(default)s)",
    )
    parser.add_argument("--max-request-bytes", type=int, default=defaults.max_request_bytes)
    parser.add_argument("--max-response-bytes", type=int, default=defaults.max_response_bytes)
    parser.add_argument("--route-timeout-s", type=float, default=defaults.route_timeout_s)
    parser.add_argument("--start-timeout-s", type=float, default=defaults.start_timeout_s)
    parser.add_argument("--access-log-path", default=defaults.access_log_path)
    parser.add_argument("--tls-cert", default="", help="PEM certificate (chain): TLS listener")
    parser.add_argument("--tls-key", default="", help="its private key")
    parser.add_argument("--tls-client-ca", default="", help="PEM CA(s): require client certs")
    parser.add_argument(
        "--upstream-tls",
        action="store_true",
        help="the gateway's port uses TLS (with the --tls-cert certificate); with "
        "--tls-client-ca Envoy presents that certificate to it",
    )
    parser.add_argument(
        "--sidecar-secret-file",
        type=Path,
        help="a file holding the gateway's SIDECAR_SECRET, sent as x-datamorph-sidecar",
    )
    parser.add_argument("--example", action="store_true", help="print envoy/envoy.yaml and exit")
    parser.add_argument(
        "--openapi",
        type=Path,
        metavar="FILE",
        help="write the REST API's OpenAPI document (YAML) to FILE and exit (make proto)",
    )
    args = parser.parse_args(argv)

    if args.openapi is not None:
        args.openapi.write_text(openapi_yaml(args.descriptor_source), encoding="utf-8")
        return 0

    if args.example:
        sys.stdout.write(example_config(args.descriptor_source))
        return 0
    if args.out_dir is None:
        parser.error("--out-dir is required (or --example)")
    try:
        secret = ""
        if args.sidecar_secret_file is not None:
            secret = args.sidecar_secret_file.read_text(encoding="utf-8").strip()
        options = SidecarOptions(
            listen_host=args.listen[0],
            listen_port=args.listen[1],
            **(
                {"admin_socket": args.admin}
                if isinstance(args.admin, str)
                else {"admin_host": args.admin[0], "admin_port": args.admin[1]}
            ),
            upstreams=tuple(args.upstream or defaults.upstreams),
            gateways=args.gateways,
            gateway_max_workers=args.gateway_max_workers,
            max_request_bytes=args.max_request_bytes,
            max_response_bytes=args.max_response_bytes,
            route_timeout_s=args.route_timeout_s,
            start_timeout_s=args.start_timeout_s,
            access_log_path=args.access_log_path,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_client_ca_file=args.tls_client_ca,
            upstream_tls=args.upstream_tls,
            upstream_client_certificate=args.upstream_tls and bool(args.tls_client_ca),
            sidecar_secret=secret,
        )
        config = write_config(
            args.out_dir,
            options,
            args.descriptor_source,
            descriptor_path=args.descriptor_path,
            openapi_path=args.openapi_path,
        )
    except (OSError, ValueError) as exc:
        print(f"datamorph-gateway sidecar: {exc}", file=sys.stderr)
        return 1
    warning = cleartext_warning(options)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(
        f"wrote {config}, {config.with_name('transcoder.binpb')} and "
        f"{config.with_name('openapi.json')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
