"""The upstream cluster: the gateway processes, how Envoy checks them (grpc.health.v1,
outlier detection), and what it sends them at most (circuit breakers, retry budget).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from datamorph_gateway.sidecar.descriptor import SERVICE
from datamorph_gateway.sidecar.fragments import address, duration, typed
from datamorph_gateway.sidecar.options import SidecarOptions
from datamorph_gateway.sidecar.tls import tls_context

__all__ = [
    "GATEWAY_CLUSTER",
    "PANIC_THRESHOLD_PERCENT",
    "QUEUED_ROUNDS",
    "RECHECK_S",
    "RETRY_BUDGET_PERCENT",
    "gateway_cluster",
    "max_requests",
]

GATEWAY_CLUSTER = "datamorph_gateway"


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
        "timeout": duration(options.health_check_timeout_s),
        "interval": duration(interval),
        "unhealthy_interval": duration(recheck),
        "no_traffic_interval": duration(recheck),
        # A healthy gateway is checked every interval, traffic or not: a draining process
        # counts on being seen NOT_SERVING within DRAIN_S (two intervals by default).
        "no_traffic_healthy_interval": duration(interval),
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


def gateway_cluster(options: SidecarOptions) -> dict[str, Any]:
    discovery = "STATIC" if all(_is_ip(host) for host, _ in options.upstreams) else "STRICT_DNS"
    endpoints = [{"endpoint": {"address": address(host, port)}} for host, port in options.upstreams]
    http2 = {
        # Notices a gateway that vanished while a long call (StartWorkflow) waits.
        "connection_keepalive": {"interval": "30s", "timeout": "10s"}
    }
    cluster: dict[str, Any] = {
        "name": GATEWAY_CLUSTER,
        "type": discovery,
        "connect_timeout": duration(options.connect_timeout_s),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
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
        cluster["transport_socket"] = tls_context(options, downstream=False)
    return cluster
