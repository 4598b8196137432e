"""What a sidecar is configured with: ``SidecarOptions``, checked when made, and the
options the gateway's settings give (``options_from_settings``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datamorph_gateway.config import (
    ORIGIN,
    EmbeddedSettings,
    Settings,
    SidecarSettings,
    is_loopback,
)

__all__ = [
    "ADMIN_SOCKET",
    "CONFIG_FILE",
    "DESCRIPTOR_FILE",
    "SidecarOptions",
    "admin_socket_path",
    "check_origin",
    "cleartext_warning",
    "options_from_settings",
]

CONFIG_FILE = "envoy.yaml"
ADMIN_SOCKET = "admin.sock"
DESCRIPTOR_FILE = "transcoder.binpb"
MIB = 1024 * 1024


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
    # The circuit breakers and the retry budget are sized from it (see cluster.py).
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
    # The OpenAPI document Envoy serves at GET /openapi.json (write_config writes it next to
    # the config and sets both), and its size; "" serves none.
    openapi_file: str = ""
    openapi_bytes: int = 0
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
    """The sidecar in front of the gateways at `upstreams`, as the settings configure it.

    It takes the root settings: a sidecar's options come from its own section and from five
    others (TLS, DATA_DIR, the gateway's workers, the stream and log-watch limits Envoy's
    routes outlast).
    """
    sidecar, tls = settings.sidecar, settings.tls
    return SidecarOptions(
        listen_host=sidecar.rest_host,
        listen_port=sidecar.rest_port,
        admin_host=sidecar.envoy_admin_host,
        admin_port=max(sidecar.envoy_admin_port, 0),
        admin_socket=admin_socket_path(sidecar, settings.embedded),
        cors_allowed_origins=sidecar.cors_origins(),
        upstreams=tuple(upstreams),
        max_request_bytes=sidecar.envoy_max_request_bytes,
        max_response_bytes=sidecar.envoy_max_response_bytes,
        route_timeout_s=sidecar.envoy_route_timeout_s,
        start_timeout_s=sidecar.envoy_start_timeout_s,
        watch_timeout_s=settings.workflows.log_watch_max_s + 60,
        stream_timeout_s=settings.limits.stream_timeout_s + 60,
        access_log_path=access_log_path,
        tls_cert_file=tls.tls_cert_file,
        tls_key_file=tls.tls_key_file,
        tls_client_ca_file=tls.tls_client_ca_file,
        upstream_tls=bool(tls.tls_cert_file),
        upstream_client_certificate=bool(tls.tls_client_ca_file),
        sidecar_secret=sidecar.sidecar_secret,
        health_check_interval_s=sidecar.envoy_health_check_interval_s,
        gateway_max_workers=settings.server.grpc_max_workers,
    )


def admin_socket_path(sidecar: SidecarSettings, embedded: EmbeddedSettings) -> str:
    """Where the admin API listens: a Unix socket in DATA_DIR unless ENVOY_ADMIN_PORT is set."""
    if sidecar.envoy_admin_port >= 0:
        return ""
    return str(Path(embedded.data_dir).resolve() / "envoy" / ADMIN_SOCKET)


def cleartext_warning(options: SidecarOptions) -> str:
    """One line saying that the listener serves other machines in clear; "" when it does not."""
    if is_loopback(options.listen_host) or options.tls_cert_file:
        return ""
    return (
        f"Envoy's listener {options.listen_host}:{options.listen_port} is reachable from "
        "other machines and has no TLS: requests, answers and credentials travel in clear. "
        "Terminate TLS in front of it or listen on 127.0.0.1 only."
    )
