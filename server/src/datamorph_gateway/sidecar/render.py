"""Envoy's configuration, rendered from a handful of parameters (``SidecarOptions``).

One listener serves REST/JSON (transcoded by ``grpc_json_transcoder``) and native gRPC
(passed through: the transcoder leaves ``application/grpc`` requests alone) and forwards
both over HTTP/2 to the gateway. Routes match the gRPC path, which the transcoder has
already set, so a REST call and its gRPC twin get the same timeout. envoy/README.md says
why each knob is set the way it is.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamorph_gateway.sidecar.cluster import gateway_cluster, max_requests
from datamorph_gateway.sidecar.descriptor import HttpRoute, http_routes, transcoder_descriptor
from datamorph_gateway.sidecar.filters import CORS_FILTER, cors_policy, http_filters
from datamorph_gateway.sidecar.fragments import address, extension, typed
from datamorph_gateway.sidecar.openapi import OPENAPI_FILE, openapi_json
from datamorph_gateway.sidecar.options import (
    CONFIG_FILE,
    DESCRIPTOR_FILE,
    SidecarOptions,
    cleartext_warning,
)
from datamorph_gateway.sidecar.replies import local_reply_config
from datamorph_gateway.sidecar.routes import OPENAPI_PATH, RETRY_UNSENT, retry_policy, rpc_routes
from datamorph_gateway.sidecar.tls import sds_secrets, tls_context
from datamorph_gateway.sidecar.yamltext import to_yaml

__all__ = [
    "EXAMPLE_OPTIONS",
    "LISTENER",
    "MAX_REQUEST_HEADERS_KB",
    "SIDECAR_HEADER",
    "config_text",
    "example_config",
    "render",
    "write_config",
]

LISTENER = "datamorph"
# Request headers Envoy takes (its own default, made explicit): more answers 431 here, and
# everything less must reach the gateway, whose metadata limit (app.MAX_METADATA_BYTES) is
# above it, so that a large header is never the gateway's RESOURCE_EXHAUSTED (429).
MAX_REQUEST_HEADERS_KB = 60
_DIRECT_RESPONSE_DEFAULT_BYTES = 4096
_ROUND = 64 * 1024


def render(options: SidecarOptions, routes: Sequence[HttpRoute]) -> dict[str, Any]:
    """Envoy's bootstrap configuration; `routes` are the descriptor's REST bindings."""
    manager = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _connection_manager(options, routes),
    }
    chain: dict[str, Any] = {"filters": [manager]}
    if options.tls_cert_file:
        chain["transport_socket"] = tls_context(options, downstream=True)
    listener = {
        "name": LISTENER,
        "address": address(options.listen_host, options.listen_port),
        "filter_chains": [chain],
    }
    connections = extension(
        "envoy.resource_monitors.global_downstream_max_connections",
        "resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
        max_active_downstream_connections=options.max_connections,
    )
    if options.admin_socket:
        # Envoy unlinks a stale socket, binds and then chmods it; the launcher's directory
        # (0700) closes the moment between.
        admin = {"pipe": {"path": options.admin_socket, "mode": 0o600}}
    else:
        admin = address(options.admin_host, options.admin_port)
    bootstrap: dict[str, Any] = {
        "admin": {"address": admin},
        "static_resources": {"listeners": [listener], "clusters": [gateway_cluster(options)]},
        "overload_manager": {"resource_monitors": [connections]},
    }
    if options.tls_cert_file:
        # SDS subscriptions (the watched certificate files) need a node identity.
        bootstrap["node"] = {"id": "datamorph-sidecar", "cluster": LISTENER}
    return bootstrap


_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] %REQ(X-REQUEST-ID)% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% '
    '%PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% '
    "in=%BYTES_RECEIVED% out=%BYTES_SENT% ms=%DURATION%\n"
)


def _virtual_host(options: SidecarOptions) -> dict[str, Any]:
    host: dict[str, Any] = {
        "name": LISTENER,
        "domains": ["*"],
        "routes": rpc_routes(options),
        # Every route without a policy of its own (all but the reads): re-send only what
        # cannot have reached a gateway.
        "retry_policy": retry_policy(RETRY_UNSENT),
    }
    if options.cors_allowed_origins:
        host["typed_per_filter_config"] = {CORS_FILTER: cors_policy(options.cors_allowed_origins)}
    return host


SIDECAR_HEADER = "x-datamorph-sidecar"  # identity.SIDECAR_HEADER


def _sidecar_header(options: SidecarOptions) -> dict[str, Any]:
    """The per-start secret by which the gateway knows its own Envoy; never a caller's copy."""
    if not options.sidecar_secret:
        return {"request_headers_to_remove": [SIDECAR_HEADER]}
    header = {"key": SIDECAR_HEADER, "value": options.sidecar_secret}
    return {
        "request_headers_to_add": [
            {"header": header, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ]
    }


def _connection_manager(options: SidecarOptions, routes: Sequence[HttpRoute]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "stat_prefix": LISTENER,
        "codec_type": "AUTO",  # HTTP/1.1 for REST, HTTP/2 (h2c) for gRPC clients
        "http2_protocol_options": {},
        "server_name": "datamorph-gateway",
        # Clients are external: x-envoy-* control headers (retries, timeouts) from them are
        # dropped, x-forwarded-for is set from the peer, their x-request-id is kept (Envoy
        # makes one when absent) and every response carries it.
        "use_remote_address": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "request_headers_timeout": "10s",
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "local_reply_config": local_reply_config(
            [*routes, HttpRoute("GET", OPENAPI_PATH, "")] if options.openapi_file else routes,
            max_request_bytes=options.max_request_bytes,
            max_response_bytes=options.max_response_bytes,
            max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
            max_requests=max_requests(options),
        ),
        "route_config": {
            "name": LISTENER,
            "virtual_hosts": [_virtual_host(options)],
            **_sidecar_header(options),
            # Envoy refuses a direct response body over this (default 4 KiB): openapi.json,
            # rounded up so that the config changes only when the document grows a lot.
            **(
                {
                    "max_direct_response_body_size_bytes": -(-options.openapi_bytes // _ROUND)
                    * _ROUND
                }
                if options.openapi_bytes > _DIRECT_RESPONSE_DEFAULT_BYTES
                else {}
            ),
        },
        "http_filters": http_filters(options),
    }
    if options.tls_client_ca_file:
        # Callers' own x-forwarded-client-cert is dropped; the verified certificate's is set.
        values["forward_client_cert_details"] = "SANITIZE_SET"
        values["set_current_client_cert_details"] = {"subject": True, "uri": True}
    if options.access_log_path:
        values["access_log"] = [
            extension(
                "envoy.access_loggers.file",
                "access_loggers.file.v3.FileAccessLog",
                path=options.access_log_path,
                log_format={"text_format_source": {"inline_string": _ACCESS_LOG_FORMAT}},
            )
        ]
    return typed("filters.network.http_connection_manager.v3.HttpConnectionManager", **values)


def config_text(options: SidecarOptions, routes: Sequence[HttpRoute], intro: str = "") -> str:
    """The YAML file, opening with a WARNING comment when the listener is open in clear."""
    warning = cleartext_warning(options)
    header = ""
    if warning:
        lines = textwrap.wrap(f"WARNING: {warning}", 92)
        header = "".join(f"# {line}\n" for line in lines) + "#\n"
    return header + intro + to_yaml(render(options, routes))


def write_config(
    directory: Path,
    options: SidecarOptions,
    descriptor_source: Path,
    *,
    descriptor_path: str | None = None,
    openapi_path: str | None = None,
) -> Path:
    """Write the transcoder's descriptor set, the OpenAPI document and the config that reads
    them into `directory`.

    Envoy reads the descriptor from `descriptor_path` and the document from `openapi_path`,
    by default where they were written (deploy/ writes them to be mounted elsewhere).
    Returns the config's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = directory / DESCRIPTOR_FILE
    descriptor.write_bytes(transcoder_descriptor(descriptor_source))
    document = openapi_json(descriptor_source)
    (directory / OPENAPI_FILE).write_bytes(document)
    options = dataclasses.replace(
        options,
        descriptor_path=descriptor_path or str(descriptor.resolve()),
        sds_dir=str(directory.resolve()),
        openapi_file=openapi_path or str((directory / OPENAPI_FILE).resolve()),
        openapi_bytes=len(document),
    )
    for name, secret in sds_secrets(options).items():
        (directory / f"{name}.yaml").write_text(to_yaml({"resources": [secret]}), encoding="utf-8")
    config = directory / CONFIG_FILE
    config.touch(mode=0o600)
    config.chmod(0o600)  # it may hold the sidecar secret
    config.write_text(config_text(options, http_routes(descriptor_source)), encoding="utf-8")
    return config


# envoy/envoy.yaml: a sidecar next to the gateway, serving everyone on port 8080.
EXAMPLE_OPTIONS = SidecarOptions(
    listen_host="0.0.0.0",  # noqa: S104 - a sidecar's listener, with a WARNING in the file
    admin_socket="/run/envoy/admin.sock",
)
_EXAMPLE_HEADER = """\
# Envoy in front of DataMorph Gateway: REST/JSON and gRPC on 0.0.0.0:8080, the gateway on
# 127.0.0.1:50051, the admin API on the Unix socket /run/envoy/admin.sock (mode 0600; the
# directory must exist and be Envoy's). See envoy/README.md.
#
# Generated; do not edit. Regenerate with
#   python -m datamorph_gateway.sidecar --example > envoy/envoy.yaml
# and render a deployment's own files (this config plus the transcoder.binpb it reads) with
#   python -m datamorph_gateway.sidecar --out-dir /etc/envoy [--upstream HOST:PORT ...]
"""


def example_config(descriptor_source: Path) -> str:
    """The text of envoy/envoy.yaml."""
    options = dataclasses.replace(
        EXAMPLE_OPTIONS,
        openapi_file=f"/etc/envoy/{OPENAPI_FILE}",
        openapi_bytes=len(openapi_json(descriptor_source)),
    )
    return config_text(options, http_routes(descriptor_source), _EXAMPLE_HEADER)
