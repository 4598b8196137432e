"""Routes on the gRPC path (the transcoder has set it, so a REST call and its gRPC twin take
the same route): each RPC's timeout, and what Envoy may send again to another gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datamorph_gateway.sidecar.cluster import GATEWAY_CLUSTER
from datamorph_gateway.sidecar.descriptor import SERVICE
from datamorph_gateway.sidecar.filters import (
    BUFFER_FILTER,
    ERROR_STATUS_FILTER,
    LUA_FILTER,
    TRANSCODER_FILTER,
)
from datamorph_gateway.sidecar.fragments import duration
from datamorph_gateway.sidecar.options import SidecarOptions

OPENAPI_PATH = "/openapi.json"  # openapi.OPENAPI_PATH

__all__ = [
    "ACCEPTED_POST_TYPES",
    "NUM_RETRIES",
    "OPENAPI_PATH",
    "READ_RPCS",
    "RETRY_READ",
    "RETRY_UNSENT",
    "retry_policy",
    "rpc_routes",
]

_ROUTE_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


# Failures after which no gateway can have seen the request: the connection was never made
# (connect-failure), the gateway refused the stream unopened (refused-stream: HTTP/2
# REFUSED_STREAM, or a stream above the last id of its GOAWAY), or the stream was reset
# before Envoy sent it a byte (reset-before-request). Any RPC may be re-sent after these.
RETRY_UNSENT = ("connect-failure", "refused-stream", "reset-before-request")
# What else may be re-sent for an RPC that changes nothing: any reset before the answer
# began (the gateway may have been running it, killed or cut off mid-call), the gateway's
# UNAVAILABLE (its database connection was lost, or it is shutting down), which another
# process may not share, and its CANCELLED while Envoy still waits for the answer (grpc-core
# cancels the calls that arrive as the server stops). Envoy never retries once response
# headers went downstream.
RETRY_READ = (*RETRY_UNSENT, "reset", "unavailable", "cancelled")
# RPCs that only read: GetSchemas and GetData sample through the gateway's own SELECTs;
# GetLogs and WatchLogs read the log store; Health checks; StreamQuery runs read_only (the
# SQL policy refuses writes, on the read-only role or in a READ ONLY transaction).
# StartWorkflow (an orchestrator run) and ExecuteQuery (SQL that may write; Envoy cannot
# see which) are re-sent only when they cannot have reached a gateway.
READ_RPCS = ("GetSchemas", "GetData", "GetLogs", "Health", "StreamQuery", "WatchLogs")
# A retry goes to another gateway while there is one (previous_hosts); two retries cover a
# second gateway that turns out to be gone too (a rolling restart).
NUM_RETRIES = 2
_PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3"


def retry_policy(conditions: Sequence[str]) -> dict[str, Any]:
    return {
        "retry_on": ",".join(conditions),
        "num_retries": NUM_RETRIES,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": f"{_PREVIOUS_HOSTS}.PreviousHostsPredicate"},
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _rpc_route(rpc: str, timeout_s: float, *, idle: bool = False) -> dict[str, Any]:
    """The route of one RPC: its timeout (and idle timeout for long calls); a read's retries.

    Other routes have no retry policy of their own and take the virtual host's (Envoy does
    not merge the two): RETRY_UNSENT.
    """
    route: dict[str, Any] = {"cluster": GATEWAY_CLUSTER, "timeout": duration(timeout_s)}
    if idle:
        route["idle_timeout"] = duration(timeout_s)
    if rpc in READ_RPCS:
        route["retry_policy"] = retry_policy(RETRY_READ)
    return {"match": {"path": f"/{SERVICE}/{rpc}"}, "route": route}


def rpc_routes(options: SidecarOptions) -> list[dict[str, Any]]:
    """Routes on the gRPC path: reads retry RETRY_READ, the rest the virtual host's default."""
    # Neither the route nor a silent stream may end StartWorkflow before the orchestrator.
    start = _rpc_route("StartWorkflow", options.start_timeout_s, idle=True)
    # Streams: the gateway ends them at its own limit; Envoy must not end them first.
    watch = _rpc_route("WatchLogs", options.watch_timeout_s, idle=True)
    stream = _rpc_route("StreamQuery", options.stream_timeout_s, idle=True)
    short = [
        _rpc_route(rpc, options.route_timeout_s)
        for rpc in ("GetSchemas", "GetData", "GetLogs", "Health", "ExecuteQuery")
    ]
    # Everything else: grpc.health.v1, server reflection, paths the transcoder refuses.
    others = {
        "match": {"prefix": "/"},
        "route": {"cluster": GATEWAY_CLUSTER, "timeout": duration(options.route_timeout_s)},
    }
    # REST /health is the one route that runs the Lua filter (disabled everywhere else:
    # running it on every request cost ~15% of Envoy's CPU). Envoy picks a stream's
    # filters by the route of the request as it arrived, before transcoding; the call is
    # Health either way, so it retries as Health does.
    health = {
        "match": {"path": "/health"},
        "route": _rpc_route("Health", options.route_timeout_s)["route"],
        "typed_per_filter_config": {
            LUA_FILTER: {"@type": _ROUTE_FILTER_CONFIG, "config": {}},
            # Its 503 is the HealthResponse ("status": "unhealthy"), not an error body.
            ERROR_STATUS_FILTER: _OFF,
        },
    }
    openapi = [_openapi(options.openapi_file)] if options.openapi_file else []
    return [_not_json(), *openapi, start, watch, stream, health, *short, others]


_OFF = {"@type": _ROUTE_FILTER_CONFIG, "disabled": True}


def _openapi(path: str) -> dict[str, Any]:
    """GET /openapi.json: Envoy answers with the file openapi.py wrote, without a gateway."""
    return {
        "match": {
            "path": OPENAPI_PATH,
            "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
        },
        "direct_response": {"status": 200, "body": {"filename": path}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "typed_per_filter_config": {TRANSCODER_FILTER: _OFF, BUFFER_FILTER: _OFF},
    }


# What a POST may carry: JSON (any parameters, such as a charset) or gRPC (application/grpc,
# application/grpc+proto, ...), whose native clients share the listener.
ACCEPTED_POST_TYPES = r"(?i)^\s*application/(?:json|grpc(?:\+[^;\s]*)?)\s*(?:;.*)?$"


def _not_json() -> dict[str, Any]:
    """POSTs that are neither JSON nor gRPC answer 415 before anything reads their body.

    A browser sends text/plain and form encodings cross-site without a CORS preflight; the
    transcoder would parse such a body as JSON all the same. The route is matched on the
    request as it arrived, and the transcoder and buffer are off on it, so nothing rewrites
    the request into a gRPC call: the router answers 415 (replies.py words the body).
    """
    content_type = {
        "name": "content-type",
        "string_match": {"safe_regex": {"regex": ACCEPTED_POST_TYPES}},
        "invert_match": True,
        "treat_missing_header_as_empty": True,
    }
    off = _OFF
    return {
        "match": {
            "prefix": "/",
            "headers": [{"name": ":method", "string_match": {"exact": "POST"}}, content_type],
        },
        "direct_response": {"status": 415},
        "typed_per_filter_config": {TRANSCODER_FILTER: off, BUFFER_FILTER: off},
    }
