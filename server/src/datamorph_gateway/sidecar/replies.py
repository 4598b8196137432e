"""Envoy's own answers (local replies) as the gateway's JSON error shape.

When Envoy answers by itself (no such route, malformed JSON, a body over the limit, the
gateway unreachable) its body is plain text. REST callers get instead what the gateway's
errors look like through the transcoder, ``{"status": "error", "code", "message",
"details"}`` with the google.rpc code matching the HTTP status. gRPC callers are left
alone: Envoy turns a local reply to them into grpc-status and grpc-message, which a JSON
body would garble.

The transcoder answers 404 both for an unknown path and for a known path with the wrong
method; the second becomes 405 with an ``Allow`` header, found by matching the REST paths
of the descriptor's ``google.api.http`` rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from datamorph_gateway.sidecar.descriptor import HttpRoute

__all__ = ["ERROR_STATUS_LUA", "local_reply_config"]

# HTTP status of a local reply → the google.rpc.Code of its body: the inverse of the
# contract's gRPC → HTTP table; 405 as grpc-gateway answers it.
_CODES = {
    400: 3,  # INVALID_ARGUMENT: malformed JSON, unknown field or query parameter
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND: no such route
    405: 12,  # UNIMPLEMENTED
    429: 8,  # RESOURCE_EXHAUSTED
    431: 3,  # INVALID_ARGUMENT: request headers too large; retrying cannot help
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: the gateway is not reachable
    504: 4,  # DEADLINE_EXCEEDED: the route timeout
}
_UNKNOWN = 2
_INVALID_ARGUMENT = 3
_RESOURCE_EXHAUSTED = 8
_INTERNAL = 13
_UNIMPLEMENTED = 12
_UNAVAILABLE = 14
# The transcoder's response code details when a response is over max_response_body_size.
_RESPONSE_TOO_LARGE = "grpc_json_transcode_failure{response_buffer_size_limit_reached}"


def _status(code: int, op: str = "EQ") -> dict[str, Any]:
    key = f"datamorph.local_reply.status_{op.lower()}_{code}"
    comparison = {"op": op, "value": {"default_value": code, "runtime_key": key}}
    return {"status_code_filter": {"comparison": comparison}}


def _header(name: str, **match: Any) -> dict[str, Any]:
    return {"header_filter": {"header": {"name": name, **match}}}


# A gRPC request: one that came as gRPC, not one the transcoder made gRPC (those keep their
# REST path in x-envoy-original-path). The first mapper matches it and changes nothing, so
# the mappers after it see REST requests only: unknown routes, wrong methods, transcoded
# requests.
_GRPC = {
    "and_filter": {
        "filters": [
            _header("x-envoy-original-path", present_match=False),
            _header("content-type", string_match={"prefix": "application/grpc"}),
        ]
    }
}


def _all(*filters: dict[str, Any]) -> dict[str, Any]:
    return {"and_filter": {"filters": list(filters)}}


# A request Envoy's circuit breakers refused (cluster._circuit_breakers): response flag UO.
_OVERFLOW = {"response_flag_filter": {"flags": ["UO"]}}


def _overflow_message(max_requests: int) -> str:
    return (
        f"the gateways are at capacity: {max_requests} calls are already in progress "
        "through this Envoy; try again shortly"
    )


def _body(code: int, message: str) -> dict[str, Any]:
    return {"json_format": {"status": "error", "code": code, "message": message, "details": []}}


def _wrong_method(routes: Sequence[HttpRoute]) -> list[dict[str, Any]]:
    """One mapper per set of allowed methods: 404 on a known path → 405 with Allow."""
    allowed: dict[str, set[str]] = {}
    for route in routes:
        allowed.setdefault(route.path_regex, set()).add(route.method)
    paths_by_methods: dict[tuple[str, ...], list[str]] = {}
    for regex, verbs in allowed.items():
        paths_by_methods.setdefault(tuple(sorted(verbs)), []).append(regex)
    mappers = []
    for methods, regexes in paths_by_methods.items():
        path = "|".join(f"(?:{regex})" for regex in regexes)
        method = "^(?:" + "|".join(re.escape(m) for m in methods) + ")$"
        mappers.append(
            {
                "filter": _all(
                    _status(404),
                    _header(":path", string_match={"safe_regex": {"regex": path}}),
                    _header(
                        ":method", string_match={"safe_regex": {"regex": method}}, invert_match=True
                    ),
                ),
                "status_code": 405,
                "headers_to_add": [
                    {
                        "header": {"key": "allow", "value": ", ".join(methods)},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
                "body_format_override": _body(
                    _UNIMPLEMENTED,
                    f"%REQ(:METHOD)% is not allowed on this route; use {' or '.join(methods)}",
                ),
            }
        )
    return mappers


def local_reply_config(
    routes: Sequence[HttpRoute],
    *,
    max_request_bytes: int,
    max_response_bytes: int,
    max_request_headers_kb: int,
    max_requests: int,
) -> dict[str, Any]:
    """The HTTP connection manager's ``local_reply_config``."""
    overflow = _overflow_message(max_requests)
    mappers = [
        # gRPC callers get the breaker's refusal as UNAVAILABLE with these words (the body
        # becomes grpc-message); everything else about their local replies stays Envoy's.
        {"filter": _all(_GRPC, _OVERFLOW), "body": {"inline_string": overflow}},
        {"filter": _GRPC},
        {"filter": _OVERFLOW, "body_format_override": _body(_UNAVAILABLE, overflow)},
        *_wrong_method(routes),
    ]
    mappers.append(
        {
            # Headers over max_request_headers_kb (or too many of them). Not
            # RESOURCE_EXHAUSTED: that is 429, and the same request would fail again.
            "filter": _status(431),
            "body_format_override": _body(
                _INVALID_ARGUMENT,
                f"the request headers exceed the limit of {max_request_headers_kb} KiB "
                "or 100 headers",
            ),
        }
    )
    # The route for POSTs that are neither JSON nor gRPC (routes._not_json) answers 415.
    mappers.append(
        {
            "filter": _all(_status(415), _header("content-type", present_match=False)),
            "body_format_override": _body(
                _INVALID_ARGUMENT,
                "a POST body must be JSON: send content-type: application/json "
                "(no content-type was sent)",
            ),
        }
    )
    mappers.append(
        {
            "filter": _status(415),
            "body_format_override": _body(
                _INVALID_ARGUMENT,
                "a POST body must be JSON: send content-type: application/json, "
                "not %REQ(CONTENT-TYPE)%",
            ),
        }
    )
    mappers.append(
        {
            # Only the REST body limit (the buffer filter) answers 413.
            "filter": _status(413),
            "body_format_override": _body(
                _RESOURCE_EXHAUSTED,
                f"the request body is larger than the REST limit of {max_request_bytes} bytes",
            ),
        }
    )
    mappers.append(
        {
            "filter": {
                "extension_filter": {
                    "name": "envoy.access_loggers.extension_filters.cel",
                    "typed_config": {
                        "@type": "type.googleapis.com/"
                        "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                        "expression": f"response.code_details == '{_RESPONSE_TOO_LARGE}'",
                    },
                }
            },
            "body_format_override": _body(
                _INTERNAL,
                f"the response is larger than the REST limit of {max_response_bytes} bytes; "
                "ask for fewer rows (max_rows, limit) or fewer tables",
            ),
        }
    )
    for status, code in _CODES.items():
        mappers.append(
            {
                "filter": _status(status),
                "body_format_override": _body(code, "%LOCAL_REPLY_BODY%"),
            }
        )
    mappers.append(
        {
            "filter": _status(400, "GE"),
            "body_format_override": _body(_UNKNOWN, "%LOCAL_REPLY_BODY%"),
        }
    )
    return {"mappers": mappers}


# The transcoder prints a failed call's google.rpc.Status (convert_grpc_status) itself, as
# a response, not a local reply: local_reply_config cannot reach it, and the JSON printer
# only knows Status's three fields. So a Lua filter adds ``"status": "error"`` (callers
# written for the Flask gateway read ``status`` on every answer). It runs on error answers
# only: filters.py wraps it in a matcher on the response's :status that skips it for 1xx-3xx,
# so a successful call never enters Lua (and it has no request hook, so requests never do).
# Envoy's own answers already carry the field (``_body``); json_format prints keys sorted,
# so theirs ends with it, and the filter leaves a body that does alone.
ERROR_STATUS_LUA = r"""-- REST errors: add "status": "error" to the google.rpc.Status JSON body.
local MARK = '"status":"error"'

function envoy_on_response(response_handle)
  local content_type = response_handle:headers():get("content-type") or ""
  if content_type:sub(1, 16) ~= "application/json" then return end
  -- body() suspends the script until the body is in; objects taken before it are dead after.
  local body = response_handle:body(true)
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  if text:sub(1, 1) ~= "{" or text:find(MARK .. "}%s*$") ~= nil then return end
  if text:sub(1, #MARK + 1) == "{" .. MARK then return end
  local rest = text:sub(2)
  if rest:match("^%s*}") then
    body:setBytes("{" .. MARK .. rest)
  else
    body:setBytes("{" .. MARK .. "," .. rest)
  end
end
"""
