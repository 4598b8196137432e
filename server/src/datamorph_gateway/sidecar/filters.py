"""The listener's HTTP filters, in order: CORS (when origins are allowed), the Lua filter
that words REST /health, the buffer that bounds REST bodies, the gRPC-JSON transcoder and
the router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datamorph_gateway.sidecar.descriptor import SERVICE
from datamorph_gateway.sidecar.fragments import extension, typed
from datamorph_gateway.sidecar.health import HEALTH_LUA
from datamorph_gateway.sidecar.options import SidecarOptions
from datamorph_gateway.sidecar.replies import ERROR_STATUS_LUA

__all__ = [
    "BUFFER_FILTER",
    "CORS_ALLOW_HEADERS",
    "CORS_FILTER",
    "ERROR_STATUS_FILTER",
    "LUA_FILTER",
    "PRINT_OPTIONS",
    "TRANSCODER_FILTER",
    "cors_policy",
    "http_filters",
]

LUA_FILTER = "envoy.filters.http.lua"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
BUFFER_FILTER = "envoy.filters.http.buffer"
CORS_FILTER = "envoy.filters.http.cors"
ERROR_STATUS_FILTER = "datamorph.error_status"
_MATCH_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
_RESPONSE_MATCH_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput"
_WITH_MATCHER = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"


# Headers a browser may send cross-origin (beyond the CORS-safelisted ones): the JSON
# content type, the credentials the gateway reads and the request id.
CORS_ALLOW_HEADERS = "content-type, authorization, x-api-key, x-request-id"


# How the transcoder prints answers (the contract's JSON conventions); openapi.py describes
# the wire from the same options.
PRINT_OPTIONS = {
    "preserve_proto_field_names": True,
    "always_print_primitive_fields": True,
    # Server streams (StreamQuery, WatchLogs) as one JSON object per line, sent as each
    # arrives.
    "stream_newline_delimited": True,
}


def cors_policy(origins: Sequence[str]) -> dict[str, Any]:
    """Exactly these origins; no cookies or HTTP auth sent by the browser on its own."""
    return typed(
        "filters.http.cors.v3.CorsPolicy",
        allow_origin_string_match=[{"exact": origin} for origin in origins],
        allow_methods="GET, POST",
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers="x-request-id",
        max_age="600",
        allow_credentials=False,
    )


def _rest_body_limit(max_bytes: int) -> dict[str, Any]:
    """The buffer filter, refusing REST bodies over `max_bytes` with 413; gRPC skips it.

    The transcoder's max_request_body_size bounds only its buffer of not-yet-parsed JSON,
    not the message it builds from it, so alone it lets a body of any size through.
    Buffering costs nothing extra (a unary call's JSON is transcoded once complete), and
    native gRPC must skip it or streams such as server reflection would never flow.
    """
    grpc_content_type = {
        "single_predicate": {
            "input": {
                "name": "content-type",
                "typed_config": {
                    "@type": _MATCH_INPUT,
                    "header_name": "content-type",
                },
            },
            "value_match": {"prefix": "application/grpc"},
        }
    }
    skip = {"name": "skip", "typed_config": typed("filters.common.matcher.action.v3.SkipFilter")}
    return {
        "name": BUFFER_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "xds_matcher": {
                "matcher_list": {
                    "matchers": [{"predicate": grpc_content_type, "on_match": {"action": skip}}]
                }
            },
            "extension_config": extension(
                BUFFER_FILTER,
                "filters.http.buffer.v3.Buffer",
                max_request_bytes=max_bytes,
            ),
        },
    }


def _skip_when(predicate: dict[str, Any], name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The filter `config`, skipped for a stream whose `predicate` matches."""
    skip = {"name": "skip", "typed_config": typed("filters.common.matcher.action.v3.SkipFilter")}
    return {
        "name": name,
        "typed_config": {
            "@type": _WITH_MATCHER,
            "xds_matcher": {
                "matcher_list": {
                    "matchers": [{"predicate": predicate, "on_match": {"action": skip}}]
                }
            },
            "extension_config": config,
        },
    }


def _error_status() -> dict[str, Any]:
    """The Lua filter that adds "status": "error" to REST error bodies (replies.py), skipped
    by a matcher on the response's :status unless it is 4xx or 5xx: a success never runs Lua.
    """
    not_an_error = {
        "single_predicate": {
            "input": {
                "name": ":status",
                "typed_config": {"@type": _RESPONSE_MATCH_INPUT, "header_name": ":status"},
            },
            "value_match": {"safe_regex": {"google_re2": {}, "regex": "^[123][0-9][0-9]$"}},
        }
    }
    lua = extension(
        LUA_FILTER,
        "filters.http.lua.v3.Lua",
        default_source_code={"inline_string": ERROR_STATUS_LUA},
    )
    return _skip_when(not_an_error, ERROR_STATUS_FILTER, lua)


def http_filters(options: SidecarOptions) -> list[dict[str, Any]]:
    # Order matters: the Lua filter must see the REST request before the transcoder
    # rewrites it, and (encoders run in reverse) the JSON response after.
    lua = extension(
        LUA_FILTER,
        "filters.http.lua.v3.Lua",
        default_source_code={"inline_string": HEALTH_LUA},
    )
    lua["disabled"] = True  # enabled on the /health route only
    transcoder = extension(
        TRANSCODER_FILTER,
        "filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=options.descriptor_path,
        services=[SERVICE],
        print_options=PRINT_OPTIONS,
        convert_grpc_status=True,
        request_validation_options={
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
        max_request_body_size=options.max_request_bytes,
        max_response_body_size=options.max_response_bytes,
    )
    router = extension("envoy.filters.http.router", "filters.http.router.v3.Router")
    # Before the transcoder (encoders run in reverse: it sees the transcoded error), after the
    # /health filter (it sees that filter's answer, and is off on that route anyway).
    filters = [
        lua,
        _error_status(),
        _rest_body_limit(options.max_request_bytes),
        transcoder,
        router,
    ]
    if options.cors_allowed_origins:
        # First, so that a preflight is answered before anything else looks at it.
        filters.insert(0, extension(CORS_FILTER, "filters.http.cors.v3.Cors"))
    return filters
