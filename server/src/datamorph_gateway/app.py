"""Assembling the gateway: the gRPC server, its services, the database and health.

Besides DataMorphGateway the server carries the standard grpc.health.v1
service (SERVING while the database answers, polled in the background) and
server reflection, so grpcurl and load balancers need no proto files.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_gateway.auth.authenticator import Authenticator, check_exposure
from datamorph_gateway.auth.policy import Policy
from datamorph_gateway.config import Settings
from datamorph_gateway.db.database import Database
from datamorph_gateway.dblogins import LoginPasswords
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.identity import ClientIdentities
from datamorph_gateway.rpc import DecodeErrors, PassSerialized
from datamorph_gateway.servicer import GatewayServicer, login_of
from datamorph_gateway.tls import server_tls
from datamorph_gateway.workflows import create_runner

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DataMorphGateway"].full_name
MAX_RECEIVE_BYTES = 16 * 1024 * 1024
MAX_SEND_BYTES = 64 * 1024 * 1024
# Request metadata (headers) the gateway accepts, above what Envoy forwards
# (sidecar.render.MAX_REQUEST_HEADERS_KB, plus HPACK's 32 bytes per header and Envoy's own
# headers): over gRPC's default 8 KiB a REST call got RESOURCE_EXHAUSTED, a 429 inviting
# the caller to retry. Too-large headers are Envoy's to refuse, with a 431.
MAX_METADATA_BYTES = 96 * 1024


class PortInUseError(RuntimeError):
    """The configured address could not be bound."""


class Gateway:
    """One gateway process: build it, start() it, stop() it."""

    def __init__(self, settings: Settings, dsn: str | None = None) -> None:
        self.settings = settings
        server = settings.server
        dsn = dsn or settings.database.database_dsn()
        if dsn is None:
            raise ConfigError("no database configured: set DATABASE_URL or RDS_ENDPOINT")
        # No policy and an address other machines can reach: refuse before anything opens.
        check_exposure(settings.auth, {"GRPC_HOST": server.grpc_host})
        self.tls = server_tls(settings.tls)  # unreadable or mismatched files fail here
        # Bind first: a port in use must fail before anything is opened.
        self.server = grpc.server(
            ThreadPoolExecutor(server.grpc_max_workers, thread_name_prefix="rpc"),
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
            interceptors=[DecodeErrors(), PassSerialized()],
        )
        address = f"{server.grpc_host}:{server.grpc_port}"
        try:
            if self.tls is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, self.tls.credentials)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            self.server.stop(None)
            raise PortInUseError(f"cannot listen on {address}: address in use or not available")
        self.address = f"{server.grpc_host}:{self.port}"

        self.database = Database(
            settings.database,
            settings.limits,
            dsn,
            login_passwords=LoginPasswords(settings.aws),
        )
        try:
            # A refused login or a superuser stops the start here, with the server's reason.
            self.database.roles.verify()
            self.workflows = create_runner(
                settings.workflows,
                settings.aws,
                settings.limits,
                self.database.pool,
                tables=self.database.roles.own_tables,
            )
        except BaseException:
            self.database.close()
            self.server.stop(None)
            raise
        self.identities = ClientIdentities(self.tls, settings.sidecar.sidecar_secret)
        try:
            # A bad policy stops here.
            self.auth = Authenticator(
                settings.auth, settings.aws, self.identities, on_reload=self._policy_reloaded
            )
        except BaseException:
            self.database.close()
            self.server.stop(None)
            raise
        self.servicer = GatewayServicer(
            settings, self.database, self.workflows, self.identities, self.auth
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        pb_grpc.add_DataMorphGatewayServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll_health, name="health", daemon=True)

    def _policy_reloaded(self, policy: Policy) -> None:
        """Close the pools of database logins the new policy no longer names."""
        logins = {login_of(p) for p in policy.principals}
        self.database.roles.retain({login for login in logins if login is not None})

    def start(self) -> None:
        self.database.pool.warm_up()
        self._update_health()
        self.server.start()
        self._poller.start()
        tls = (
            ""
            if self.tls is None
            else (" (mTLS)" if self.tls.requires_client_certificates else " (TLS)")
        )
        log.info("serving gRPC%s on %s", tls, self.address)
        if self.auth.policy is None:
            log.warning(
                "no AUTH_POLICY_FILE: every caller is anonymous and may call everything; "
                "allowed only while every listener binds a loopback address (docs/security.md)"
            )
        else:
            log.info("auth policy: %d principals", len(self.auth.policy.principals))

    def stop(self, grace_s: float | None = None, *, drain_s: float = 0.0) -> None:
        """Drain, stop taking calls, let running ones finish for the grace period, close the pool.

        Draining: for ``drain_s`` the gateway reports NOT_SERVING (grpc.health.v1, and its
        own Health answers UNAVAILABLE "draining") while still answering every call, so that
        Envoy's health checks (or a load balancer's) move traffic to other processes before
        a single call is refused.
        """
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.servicer.draining = True
        if drain_s > 0:
            log.info("draining for %.1f s before refusing calls", drain_s)
            time.sleep(drain_s)
        grace = self.settings.server.grace_period_s if grace_s is None else grace_s
        self.server.stop(grace).wait()
        if self._poller.is_alive():
            self._poller.join(timeout=self.settings.limits.health_check_timeout_s + 1)
        self.workflows.close(timeout_s=grace)
        self.database.close()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def _update_health(self) -> None:
        healthy = self.servicer.check_health().status == "healthy"
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if healthy
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _poll_health(self) -> None:
        while not self._stopping.wait(self.settings.limits.health_poll_interval_s):
            try:
                self._update_health()
            except Exception:
                log.exception("health check failed")
