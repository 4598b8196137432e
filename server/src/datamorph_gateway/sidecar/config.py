"""Envoy's configuration, rendered from a handful of parameters.

One listener serves REST/JSON (transcoded by ``grpc_json_transcoder``) and native gRPC
(passed through: the transcoder leaves ``application/grpc`` requests alone) and forwards
both over HTTP/2 to the gateway. Routes match the gRPC path, which the transcoder has
already set, so a REST call and its gRPC twin get the same timeout. envoy/README.md says
why each knob is set the way it is.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamorph_gateway.config import ORIGIN, Settings, is_loopback
from datamorph_gateway.sidecar.descriptor import (
    SERVICE,
    HttpRoute,
    http_routes,
    transcoder_descriptor,
)
from datamorph_gateway.sidecar.health import HEALTH_LUA
from datamorph_gateway.sidecar.replies import local_reply_config
from datamorph_gateway.sidecar.yamltext import to_yaml

__all__ = [
    "ADMIN_SOCKET",
    "CONFIG_FILE",
    "DESCRIPTOR_FILE",
    "EXAMPLE_OPTIONS",
    "GATEWAY_CLUSTER",
    "LISTENER",
    "MAX_REQUEST_HEADERS_KB",
    "SidecarOptions",
    "cleartext_warning",
    "example_config",
    "options_from_settings",
    "render",
    "write_config",
]

GATEWAY_CLUSTER = "datamorph_gateway"
LISTENER = "datamorph"
CONFIG_FILE = "envoy.yaml"
ADMIN_SOCKET = "admin.sock"
DESCRIPTOR_FILE = "transcoder.binpb"
MIB = 1024 * 1024
# Request headers Envoy takes (its own default, made explicit): more answers 431 here, and
# everything less must reach the gateway, whose metadata limit (app.MAX_METADATA_BYTES) is
# above it, so that a large header is never the gateway's RESOURCE_EXHAUSTED (429).
MAX_REQUEST_HEADERS_KB = 60

_EXT = "type.googleapis.com/envoy.extensions"
_MATCH_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"


@dataclass(frozen=True)
class SidecarOptions:
    """Everything that differs between `make run`, the tests and a production sidecar."""

    # Where Envoy reads the transcoder's descriptor set (see descriptor.py).
    descriptor_path: str = f"/etc/envoy/{DESCRIPTOR_FILE}"
    # The one listener: REST/JSON and native gRPC.
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    # Envoy's admin API: readiness, stats, config dump. Never expose it publicly.
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    # When set, the admin API listens on this Unix socket (mode 0600) instead of
    # admin_host:admin_port: only the socket's owner can reach it.
    admin_socket: str = ""
    # Origins (scheme://host[:port]) whose browsers may call the REST routes; none: CORS off.
    cors_allowed_origins: tuple[str, ...] = ()
    # The gateway processes or replicas, as (host, port): IP literals, or DNS names resolved
    # continuously (STRICT_DNS: every address a name resolves to is one more endpoint).
    upstreams: tuple[tuple[str, int], ...] = (("127.0.0.1", 50051),)
    # REST bodies are held whole in Envoy's memory: these bound it per request. Defaults
    # are the gateway's own gRPC message limits, so REST never refuses what gRPC accepts.
    max_request_bytes: int = 16 * MIB
    max_response_bytes: int = 64 * MIB
    # Every RPC but StartWorkflow; the gateway's statement timeout (30 s) fits inside.
    route_timeout_s: float = 60.0
    # StartWorkflow waits for the orchestrator, whose read timeout is 950 s.
    start_timeout_s: float = 960.0
    # WatchLogs streams until the run ends or the gateway's LOG_WATCH_MAX_S passes.
    watch_timeout_s: float = 3660.0
    # StreamQuery streams until the result is sent or the gateway's STREAM_TIMEOUT_S passes.
    stream_timeout_s: float = 660.0
    connect_timeout_s: float = 5.0
    health_check_interval_s: float = 5.0
    health_check_timeout_s: float = 2.0
    max_connections: int = 10_000
    # What one gateway process runs at once: one call per thread (its GRPC_MAX_WORKERS).
    # The circuit breakers and the retry budget are sized from it (see _circuit_breakers).
    gateway_max_workers: int = 32
    # How many gateway processes the upstreams stand for; 0: one per upstream. Set it when a
    # DNS name resolves to several replicas, or the breakers count that name as one process.
    gateways: int = 0
    # One line per request; "" for none.
    access_log_path: str = "/dev/stdout"
    # TLS on the listener (PEM files; Envoy re-reads them when they change, through SDS files
    # written next to the config); a client CA also requires client certificates (mTLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # The gateway's port speaks TLS: Envoy verifies it with the certificates in tls_cert_file
    # as trust anchors (the gateway serves that same certificate), and presents that
    # certificate as its client certificate when upstream_client_certificate is set.
    upstream_tls: bool = False
    upstream_client_certificate: bool = False
    # Where the SDS files are (write_config sets it to the directory it writes to).
    sds_dir: str = "/etc/envoy"
    # Added to every request sent to the gateway (x-datamorph-sidecar), replacing a caller's
    # copy, so the gateway knows its own sidecar. "" for none (then callers' copies are removed).
    sidecar_secret: str = dataclasses.field(default="", repr=False)

    def __post_init__(self) -> None:
        for name in ("listen_port", "admin_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be between 0 and 65535")
        if not self.upstreams:
            raise ValueError("upstreams must name at least one gateway (host, port)")
        for host, port in self.upstreams:
            if not host or not 0 <= port <= 65535:
                raise ValueError(f"upstream {host}:{port} must be a host and a port 0-65535")
        if len(set(self.upstreams)) != len(self.upstreams):
            raise ValueError(f"upstreams are listed twice: {list(self.upstreams)}")
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if max(self.max_request_bytes, self.max_response_bytes) >= 2**32:
            raise ValueError("body limits must be below 4 GiB (Envoy takes a uint32)")
        if not self.admin_socket and not is_loopback(self.admin_host):
            raise ValueError(
                f"admin_host must be a loopback address, got {self.admin_host!r}: the admin "
                "API can reconfigure and stop Envoy (or use a Unix socket)"
            )
        if self.admin_socket and not self.admin_socket.startswith("/"):
            raise ValueError(f"admin_socket must be an absolute path, got {self.admin_socket!r}")
        if len(self.admin_socket.encode()) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"admin_socket must be at most {_MAX_SOCKET_PATH} bytes long (a Unix socket "
                f"path's limit), got {self.admin_socket}"
            )
        for origin in self.cors_allowed_origins:
            check_origin(origin)

        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if (self.tls_client_ca_file or self.upstream_tls) and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file and upstream_tls need tls_cert_file")
        if self.gateways < 0:
            raise ValueError("gateways must be 0 (one per upstream) or more")

    def gateway_count(self) -> int:
        """How many gateway processes the upstreams stand for."""
        return self.gateways or len(self.upstreams)


# sun_path holds 108 bytes, the last one a NUL.
_MAX_SOCKET_PATH = 107


def check_origin(origin: str) -> None:
    """Raise ValueError unless `origin` is one exact browser origin, ``scheme://host[:port]``."""
    if not ORIGIN.match(origin):
        raise ValueError(
            f"a CORS origin must be exactly scheme://host[:port] (no path, no wildcard), "
            f"got {origin!r}"
        )


_POSITIVE = (
    "max_request_bytes",
    "max_response_bytes",
    "route_timeout_s",
    "start_timeout_s",
    "watch_timeout_s",
    "stream_timeout_s",
    "connect_timeout_s",
    "health_check_interval_s",
    "health_check_timeout_s",
    "max_connections",
    "gateway_max_workers",
)


def options_from_settings(
    settings: Settings, *, upstreams: Sequence[tuple[str, int]], access_log_path: str
) -> SidecarOptions:
    """The sidecar in front of the gateways at `upstreams`, as the settings configure it."""
    return SidecarOptions(
        listen_host=settings.rest_host,
        listen_port=settings.rest_port,
        admin_host=settings.envoy_admin_host,
        admin_port=max(settings.envoy_admin_port, 0),
        admin_socket=admin_socket_path(settings),
        cors_allowed_origins=settings.cors_origins(),
        upstreams=tuple(upstreams),
        max_request_bytes=settings.envoy_max_request_bytes,
        max_response_bytes=settings.envoy_max_response_bytes,
        route_timeout_s=settings.envoy_route_timeout_s,
        start_timeout_s=settings.envoy_start_timeout_s,
        watch_timeout_s=settings.log_watch_max_s + 60,
        stream_timeout_s=settings.stream_timeout_s + 60,
        access_log_path=access_log_path,
        tls_cert_file=settings.tls_cert_file,
        tls_key_file=settings.tls_key_file,
        tls_client_ca_file=settings.tls_client_ca_file,
        upstream_tls=bool(settings.tls_cert_file),
        upstream_client_certificate=bool(settings.tls_client_ca_file),
        sidecar_secret=settings.sidecar_secret,
        health_check_interval_s=settings.envoy_health_check_interval_s,
        gateway_max_workers=settings.grpc_max_workers,
    )


def admin_socket_path(settings: Settings) -> str:
    """Where the admin API listens: a Unix socket in DATA_DIR unless ENVOY_ADMIN_PORT is set."""
    if settings.envoy_admin_port >= 0:
        return ""
    return str(Path(settings.data_dir).resolve() / "envoy" / ADMIN_SOCKET)


def cleartext_warning(options: SidecarOptions) -> str:
    """One line saying that the listener serves other machines in clear; "" when it does not."""
    if is_loopback(options.listen_host) or options.tls_cert_file:
        return ""
    return (
        f"Envoy's listener {options.listen_host}:{options.listen_port} is reachable from "
        "other machines and has no TLS: requests, answers and credentials travel in clear. "
        "Terminate TLS in front of it or listen on 127.0.0.1 only."
    )


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
) -> Path:
    """Write the transcoder's descriptor set and the config that reads it into `directory`.

    Envoy reads the descriptor from `descriptor_path`, by default where it was written.
    Returns the config's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = directory / DESCRIPTOR_FILE
    descriptor.write_bytes(transcoder_descriptor(descriptor_source))
    options = dataclasses.replace(
        options,
        descriptor_path=descriptor_path or str(descriptor.resolve()),
        sds_dir=str(directory.resolve()),
    )
    for name, secret in _sds_secrets(options).items():
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
    return config_text(EXAMPLE_OPTIONS, http_routes(descriptor_source), _EXAMPLE_HEADER)


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _typed(type_name: str, **values: Any) -> dict[str, Any]:
    return {"@type": f"{_EXT}.{type_name}", **values}


LUA_FILTER = "envoy.filters.http.lua"
_ROUTE_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def _filter(name: str, type_name: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "typed_config": _typed(type_name, **values)}


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


def _retry_policy(conditions: Sequence[str]) -> dict[str, Any]:
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
    route: dict[str, Any] = {"cluster": GATEWAY_CLUSTER, "timeout": _duration(timeout_s)}
    if idle:
        route["idle_timeout"] = _duration(timeout_s)
    if rpc in READ_RPCS:
        route["retry_policy"] = _retry_policy(RETRY_READ)
    return {"match": {"path": f"/{SERVICE}/{rpc}"}, "route": route}


def _routes(options: SidecarOptions) -> list[dict[str, Any]]:
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
        "route": {"cluster": GATEWAY_CLUSTER, "timeout": _duration(options.route_timeout_s)},
    }
    # REST /health is the one route that runs the Lua filter (disabled everywhere else:
    # running it on every request cost ~15% of Envoy's CPU). Envoy picks a stream's
    # filters by the route of the request as it arrived, before transcoding; the call is
    # Health either way, so it retries as Health does.
    health = {
        "match": {"path": "/health"},
        "route": _rpc_route("Health", options.route_timeout_s)["route"],
        "typed_per_filter_config": {LUA_FILTER: {"@type": _ROUTE_FILTER_CONFIG, "config": {}}},
    }
    return [_not_json(), start, watch, stream, health, *short, others]


TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"
BUFFER_FILTER = "envoy.filters.http.buffer"
CORS_FILTER = "envoy.filters.http.cors"
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
    off = {"@type": _ROUTE_FILTER_CONFIG, "disabled": True}
    return {
        "match": {
            "prefix": "/",
            "headers": [{"name": ":method", "string_match": {"exact": "POST"}}, content_type],
        },
        "direct_response": {"status": 415},
        "typed_per_filter_config": {TRANSCODER_FILTER: off, BUFFER_FILTER: off},
    }


# Headers a browser may send cross-origin (beyond the CORS-safelisted ones): the JSON
# content type, the credentials the gateway reads and the request id.
CORS_ALLOW_HEADERS = "content-type, authorization, x-api-key, x-request-id"


def _cors_policy(origins: Sequence[str]) -> dict[str, Any]:
    """Exactly these origins; no cookies or HTTP auth sent by the browser on its own."""
    return _typed(
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
    skip = {"name": "skip", "typed_config": _typed("filters.common.matcher.action.v3.SkipFilter")}
    return {
        "name": BUFFER_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "xds_matcher": {
                "matcher_list": {
                    "matchers": [{"predicate": grpc_content_type, "on_match": {"action": skip}}]
                }
            },
            "extension_config": _filter(
                BUFFER_FILTER,
                "filters.http.buffer.v3.Buffer",
                max_request_bytes=max_bytes,
            ),
        },
    }


def _http_filters(options: SidecarOptions) -> list[dict[str, Any]]:
    # Order matters: the Lua filter must see the REST request before the transcoder
    # rewrites it, and (encoders run in reverse) the JSON response after.
    lua = _filter(
        LUA_FILTER,
        "filters.http.lua.v3.Lua",
        default_source_code={"inline_string": HEALTH_LUA},
    )
    lua["disabled"] = True  # enabled on the /health route only
    transcoder = _filter(
        TRANSCODER_FILTER,
        "filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=options.descriptor_path,
        services=[SERVICE],
        print_options={
            "preserve_proto_field_names": True,
            "always_print_primitive_fields": True,
            # Server streams (WatchLogs) as one JSON object per line, sent as each arrives.
            "stream_newline_delimited": True,
        },
        convert_grpc_status=True,
        request_validation_options={
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
        max_request_body_size=options.max_request_bytes,
        max_response_body_size=options.max_response_bytes,
    )
    router = _filter("envoy.filters.http.router", "filters.http.router.v3.Router")
    filters = [lua, _rest_body_limit(options.max_request_bytes), transcoder, router]
    if options.cors_allowed_origins:
        # First, so that a preflight is answered before anything else looks at it.
        filters.insert(0, _filter(CORS_FILTER, "filters.http.cors.v3.Cors"))
    return filters


_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] %REQ(X-REQUEST-ID)% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% '
    '%PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% '
    "in=%BYTES_RECEIVED% out=%BYTES_SENT% ms=%DURATION%\n"
)


def _virtual_host(options: SidecarOptions) -> dict[str, Any]:
    host: dict[str, Any] = {
        "name": LISTENER,
        "domains": ["*"],
        "routes": _routes(options),
        # Every route without a policy of its own (all but the reads): re-send only what
        # cannot have reached a gateway.
        "retry_policy": _retry_policy(RETRY_UNSENT),
    }
    if options.cors_allowed_origins:
        host["typed_per_filter_config"] = {CORS_FILTER: _cors_policy(options.cors_allowed_origins)}
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
            routes,
            max_request_bytes=options.max_request_bytes,
            max_response_bytes=options.max_response_bytes,
            max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
            max_requests=max_requests(options),
        ),
        "route_config": {
            "name": LISTENER,
            "virtual_hosts": [_virtual_host(options)],
            **_sidecar_header(options),
        },
        "http_filters": _http_filters(options),
    }
    if options.tls_client_ca_file:
        # Callers' own x-forwarded-client-cert is dropped; the verified certificate's is set.
        values["forward_client_cert_details"] = "SANITIZE_SET"
        values["set_current_client_cert_details"] = {"subject": True, "uri": True}
    if options.access_log_path:
        values["access_log"] = [
            _filter(
                "envoy.access_loggers.file",
                "access_loggers.file.v3.FileAccessLog",
                path=options.access_log_path,
                log_format={"text_format_source": {"inline_string": _ACCESS_LOG_FORMAT}},
            )
        ]
    return _typed("filters.network.http_connection_manager.v3.HttpConnectionManager", **values)


_TLS_SOCKET = "envoy.transport_sockets.tls"
_SDS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SERVER_CERTIFICATE = "server_certificate"
CLIENT_CA = "client_ca"
UPSTREAM_CA = "upstream_ca"


def _sds_secrets(options: SidecarOptions) -> dict[str, dict[str, Any]]:
    """The SDS files' secrets: Envoy watches each file and the PEM files it names."""
    if not options.tls_cert_file:
        return {}
    cert = str(Path(options.tls_cert_file).resolve())
    secrets = {
        SERVER_CERTIFICATE: {
            "@type": _SDS_TYPE,
            "name": SERVER_CERTIFICATE,
            "tls_certificate": {
                "certificate_chain": {"filename": cert},
                "private_key": {"filename": str(Path(options.tls_key_file).resolve())},
            },
        }
    }
    if options.tls_client_ca_file:
        ca = str(Path(options.tls_client_ca_file).resolve())
        secrets[CLIENT_CA] = {
            "@type": _SDS_TYPE,
            "name": CLIENT_CA,
            "validation_context": {"trusted_ca": {"filename": ca}},
        }
    if options.upstream_tls:
        secrets[UPSTREAM_CA] = {
            "@type": _SDS_TYPE,
            "name": UPSTREAM_CA,
            "validation_context": {"trusted_ca": {"filename": cert}},
        }
    return secrets


def _sds(options: SidecarOptions, name: str) -> dict[str, Any]:
    path = f"{options.sds_dir.rstrip('/')}/{name}.yaml"
    return {
        "name": name,
        "sds_config": {"path_config_source": {"path": path}, "resource_api_version": "V3"},
    }


def _tls_context(options: SidecarOptions, *, downstream: bool) -> dict[str, Any]:
    common: dict[str, Any] = {"tls_params": {"tls_minimum_protocol_version": "TLSv1_2"}}
    if downstream:
        common["alpn_protocols"] = ["h2", "http/1.1"]
        common["tls_certificate_sds_secret_configs"] = [_sds(options, SERVER_CERTIFICATE)]
        values: dict[str, Any] = {"common_tls_context": common}
        if options.tls_client_ca_file:
            common["validation_context_sds_secret_config"] = _sds(options, CLIENT_CA)
            values["require_client_certificate"] = True
        kind = "DownstreamTlsContext"
    else:
        common["alpn_protocols"] = ["h2"]  # gRPC
        if options.upstream_client_certificate:
            common["tls_certificate_sds_secret_configs"] = [_sds(options, SERVER_CERTIFICATE)]
        common["validation_context_sds_secret_config"] = _sds(options, UPSTREAM_CA)
        values = {"common_tls_context": common}
        kind = "UpstreamTlsContext"
    return {
        "name": _TLS_SOCKET,
        "typed_config": _typed(f"transport_sockets.tls.v3.{kind}", **values),
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# How often Envoy re-checks a gateway it has marked unhealthy, or any gateway before the
# first request went through (Envoy's own defaults: the interval, and 60 s): a process that
# comes back gets calls again within about this long.
RECHECK_S = 1.0
PANIC_THRESHOLD_PERCENT = 1.0


def _health_check(options: SidecarOptions) -> dict[str, Any]:
    """grpc.health.v1 for the gateway's service name, which reports NOT_SERVING while the
    process drains or its database is unreachable."""
    interval = options.health_check_interval_s
    recheck = min(RECHECK_S, interval)
    return {
        "timeout": _duration(options.health_check_timeout_s),
        "interval": _duration(interval),
        "unhealthy_interval": _duration(recheck),
        "no_traffic_interval": _duration(recheck),
        # A healthy gateway is checked every interval, traffic or not: a draining process
        # counts on being seen NOT_SERVING within DRAIN_S (two intervals by default).
        "no_traffic_healthy_interval": _duration(interval),
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "grpc_health_check": {"service_name": SERVICE},
    }


def _outlier_detection() -> dict[str, Any]:
    """Take a gateway out at once when calls to it fail locally, between health checks.

    Local-origin failures (connection refused or timed out, connection or stream reset, no
    answer within the route timeout) mean the process is gone, cut off or stuck: two in a
    row, with no success between, eject it for 2 s times the number of times it was
    ejected, or until a health check passes again. Answers are not failures here: the
    gateway's UNAVAILABLE, INTERNAL or DEADLINE_EXCEEDED (HTTP 5xx to Envoy) are about a
    request or the database every gateway shares, and its health check already says when
    it cannot serve, so the 5xx and success-rate detectors are off (enforcing 0). With one
    gateway ejection changes nothing: none is left healthy and Envoy routes to it anyway.
    """
    return {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
        "enforcing_consecutive_local_origin_failure": 100,
        "enforcing_local_origin_success_rate": 0,
        "enforcing_consecutive_5xx": 0,
        "enforcing_consecutive_gateway_failure": 0,
        "enforcing_success_rate": 0,
        "enforcing_failure_percentage": 0,
        "enforcing_failure_percentage_local_origin": 0,
        "interval": "1s",
        "base_ejection_time": "2s",
        # Ejection never leaves Envoy with nowhere to go: with every gateway out, it routes
        # to all of them (PANIC_THRESHOLD_PERCENT), which is what it did before ejecting.
        "max_ejection_percent": 100,
    }


# The gateways' queues Envoy lets fill, in rounds of everything they run at once.
QUEUED_ROUNDS = 3
# Envoy's own default share of retries, kept: enough while one process in five fails,
# and a floor (min_retry_concurrency) covers a larger share of a small pool.
RETRY_BUDGET_PERCENT = 20.0


def _circuit_breakers(options: SidecarOptions) -> dict[str, Any]:
    """Limits on what Envoy sends the gateways, sized from what they can run.

    A gateway process runs one call per worker thread (W, its GRPC_MAX_WORKERS): every RPC
    holds one while it runs, whether it needs a database connection or not (Health,
    GetLogs, StartWorkflow waiting for the orchestrator), so W, not DB_POOL_MAX, bounds it;
    calls past DB_POOL_MAX wait for a connection inside the gateway and get its own 429
    after DB_POOL_TIMEOUT_S. Calls past W wait in the process's queue. Envoy lets each of
    the N gateways have W running and QUEUED_ROUNDS times W waiting: above the gateways'
    own limits, which answer first with their precise errors, and below a backlog that
    would outlive the route timeout when the gateways stall. Past it, Envoy answers 503
    UNAVAILABLE at once (replies.py words it). Requests waiting for a connection count
    against the same bound. HTTP/2 needs a connection per gateway and Envoy worker
    thread, a few more while old ones drain after a GOAWAY; N × W connections is a bound,
    never the limit.

    The retry budget replaces max_retries (Envoy ignores that breaker once a budget is
    set): retries in progress may be RETRY_BUDGET_PERCENT of the requests in progress, and
    never fewer than W, so that every call a killed process was running may be retried at
    once, whatever the load.
    """
    workers = options.gateway_max_workers
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": options.gateway_count() * workers,
                "max_pending_requests": max_requests(options),
                "max_requests": max_requests(options),
                "retry_budget": {
                    "budget_percent": {"value": RETRY_BUDGET_PERCENT},
                    "min_retry_concurrency": workers,
                },
                "track_remaining": True,
            }
        ]
    }


def max_requests(options: SidecarOptions) -> int:
    """Requests in progress to all the gateways past which Envoy refuses more (503)."""
    return options.gateway_count() * options.gateway_max_workers * (1 + QUEUED_ROUNDS)


def _cluster(options: SidecarOptions) -> dict[str, Any]:
    discovery = "STATIC" if all(_is_ip(host) for host, _ in options.upstreams) else "STRICT_DNS"
    endpoints = [
        {"endpoint": {"address": _address(host, port)}} for host, port in options.upstreams
    ]
    http2 = {
        # Notices a gateway that vanished while a long call (StartWorkflow) waits.
        "connection_keepalive": {"interval": "30s", "timeout": "10s"}
    }
    cluster: dict[str, Any] = {
        "name": GATEWAY_CLUSTER,
        "type": discovery,
        "connect_timeout": _duration(options.connect_timeout_s),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": http2},
            )
        },
        "load_assignment": {
            "cluster_name": GATEWAY_CLUSTER,
            "endpoints": [{"lb_endpoints": endpoints}],
        },
        "health_checks": [_health_check(options)],
        "outlier_detection": _outlier_detection(),
        "circuit_breakers": _circuit_breakers(options),
        "common_lb_config": {
            # Envoy routes to every host, healthy or not ("panic"), only when (almost) none
            # is healthy: one gateway left of three takes all the calls rather than a third
            # of them, and a lone gateway that fails its checks still gets them, so that
            # callers see its own error ("the database is unavailable") rather than Envoy's.
            "healthy_panic_threshold": {"value": PANIC_THRESHOLD_PERCENT},
            # Health changes reach the load balancer at once. Envoy's default merges those
            # after the first for 1 s: a restarted gateway then waited a second for calls,
            # and a gateway killed within that second kept getting them (hundreds refused).
            "update_merge_window": "0s",
        },
    }
    if options.upstream_tls:
        cluster["transport_socket"] = _tls_context(options, downstream=False)
    return cluster


def render(options: SidecarOptions, routes: Sequence[HttpRoute]) -> dict[str, Any]:
    """Envoy's bootstrap configuration; `routes` are the descriptor's REST bindings."""
    manager = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _connection_manager(options, routes),
    }
    chain: dict[str, Any] = {"filters": [manager]}
    if options.tls_cert_file:
        chain["transport_socket"] = _tls_context(options, downstream=True)
    listener = {
        "name": LISTENER,
        "address": _address(options.listen_host, options.listen_port),
        "filter_chains": [chain],
    }
    connections = _filter(
        "envoy.resource_monitors.global_downstream_max_connections",
        "resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
        max_active_downstream_connections=options.max_connections,
    )
    if options.admin_socket:
        # Envoy unlinks a stale socket, binds and then chmods it; the launcher's directory
        # (0700) closes the moment between.
        admin = {"pipe": {"path": options.admin_socket, "mode": 0o600}}
    else:
        admin = _address(options.admin_host, options.admin_port)
    bootstrap: dict[str, Any] = {
        "admin": {"address": admin},
        "static_resources": {"listeners": [listener], "clusters": [_cluster(options)]},
        "overload_manager": {"resource_monitors": [connections]},
    }
    if options.tls_cert_file:
        # SDS subscriptions (the watched certificate files) need a node identity.
        bootstrap["node"] = {"id": "datamorph-sidecar", "cluster": LISTENER}
    return bootstrap
