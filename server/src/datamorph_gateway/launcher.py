"""``python -m datamorph_gateway.launcher`` (``make run``): the whole stack, one command.

It starts, in order and each only once the one before is up: the embedded PostgreSQL
(unless a database is configured), the gateway processes (``GATEWAY_PROCESSES`` of
``python -m datamorph_gateway``, process i on ``GRPC_PORT`` + i: the very entry point a
deployment runs, pointed at that database), and Envoy in front of them all. It waits until
REST ``/health`` answers 200 through Envoy, prints the addresses, and on Ctrl-C or SIGTERM
stops Envoy, then the gateway processes (together, each draining for its grace period),
then PostgreSQL.

While the stack is up, a gateway process or Envoy that exits is started again on the same
address after a backoff, and the others serve meanwhile; ``RESTART_MAX`` exits of one
within ``RESTART_WINDOW_S`` are a crash loop, which stops the stack (``supervisor``).

Each child runs in a process group of its own, so a Ctrl-C reaches only the launcher,
which then stops them in that order instead of all at once. If the launcher itself is
killed with SIGKILL they are left running; the next start on the same data directory
stops them (the gateway processes and Envoy it recorded, and a PostgreSQL left running)
and starts afresh.

One stack per data directory: the launcher holds ``DATA_DIR/stack.lock`` (``datadir``)
while it runs, so a second one on the same directory stops at once with one line naming
the first one's pid, and never touches its database. A gateway that cannot start says
why on its last line (a database refusing the login, a port in use...); the launcher
repeats that line as its own and exits with the gateway's code. Exit codes: 0 stopped
by a signal, 1 something failed or is taken (a port, the data directory, a configured
database that does not answer within 8 s) or kept exiting, 2 the configuration is wrong
(a setting, a database that refuses the login, more connections than the embedded
database allows).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import secrets
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from datamorph_gateway import __version__, logging_setup
from datamorph_gateway.auth.authenticator import check_exposure
from datamorph_gateway.children import PROG, EnvoyChild, GatewayProcess, LaunchError
from datamorph_gateway.config import Settings, TlsSettings, load_settings
from datamorph_gateway.config_secret import load_secret
from datamorph_gateway.datadir import DataDirLock, hold_data_dir
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.observability import metrics_server
from datamorph_gateway.preflight import (
    check_ports,
    check_settings,
    fit_connections,
    gateway_ports,
    wait_for_database,
)
from datamorph_gateway.sidecar import SidecarOptions, envoy_binary
from datamorph_gateway.sidecar.options import cleartext_warning, options_from_settings
from datamorph_gateway.supervisor import CrashLoop, RestartPolicy, Supervisor

__all__ = ["LaunchError", "main"]

_HEALTHY_TIMEOUT_S = 60.0
_POLL_S = 0.1
_HEALTHY_POLL_MAX_S = 1.0


class _Stop(Exception):
    """Ctrl-C or SIGTERM arrived while starting."""


_HANGUP = threading.Event()


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104


def _probe_tls(settings: TlsSettings) -> ssl.SSLContext | None:
    """How the launcher speaks to its own Envoy: trusting the certificate it serves and,
    under mTLS, presenting that same certificate (as Envoy does to the gateway)."""
    if not settings.tls_cert_file:
        return None
    context = ssl.create_default_context(cafile=settings.tls_cert_file)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a CA-issued leaf is enough here
    context.check_hostname = False  # the address is ours; the certificate is what we pinned
    if settings.tls_client_ca_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def _wait_healthy(
    host: str,
    port: int,
    stop: threading.Event,
    tls: ssl.SSLContext | None = None,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Until REST /health answers 200 through Envoy: database, gateways and Envoy are up.

    Polled often at first, then at most every second: a database that is still starting
    costs one access-log line a second, not ten. ``alive`` raises when a child has exited.
    """
    deadline = time.monotonic() + _HEALTHY_TIMEOUT_S
    last = "no answer"
    pause = _POLL_S
    while True:
        if stop.is_set():
            raise _Stop
        alive()
        connection: http.client.HTTPConnection
        if tls is None:
            connection = http.client.HTTPConnection(_client_host(host), port, timeout=5)
        else:
            connection = http.client.HTTPSConnection(
                _client_host(host), port, timeout=5, context=tls
            )
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace")
            if response.status == 200:
                return
            last = f"HTTP {response.status} {_failing_checks(body)}"
        except OSError as exc:
            last = str(exc)
        finally:
            connection.close()
        if time.monotonic() >= deadline:
            raise LaunchError(
                f"the stack was not healthy after {_HEALTHY_TIMEOUT_S:.0f} s; "
                f"GET /health said: {last}"
            )
        stop.wait(pause)
        pause = min(pause * 1.5, _HEALTHY_POLL_MAX_S)


def _failing_checks(body: str) -> str:
    """What an unhealthy /health body says, as ``check: message``; the body if not JSON."""
    try:
        checks = json.loads(body)["checks"]
        failing = [
            f"{name}: {check.get('message') or 'unhealthy'}"
            for name, check in checks.items()
            if check.get("status") == "unhealthy"
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return body.strip()
    return "; ".join(failing) or body.strip()


def _banner(
    options: SidecarOptions,
    grpc_addresses: Sequence[str],
    admin_address: str,
    database: str,
    run_dir: Path,
    metrics_at: str = "",
) -> list[str]:
    """What `make run` prints once the stack is up: where everything is, and any WARNING."""
    scheme = "https" if options.tls_cert_file else "http"
    tls = ", mTLS" if options.tls_client_ca_file else (", TLS" if options.tls_cert_file else "")
    if options.admin_socket:
        admin = (
            f"  admin     unix:{admin_address}  (Envoy's admin API, mode 0600: "
            f"curl --unix-socket {admin_address} http://localhost/ready)"
        )
    else:
        admin = f"  admin     http://{admin_address}  (Envoy's admin API)"
    lines = [
        f"{PROG} {__version__} is up",
        f"  REST      {scheme}://{options.listen_host}:{options.listen_port}  "
        f"(Envoy: REST/JSON and gRPC{tls})",
    ]
    if len(grpc_addresses) == 1:
        lines.append(f"  gRPC      {grpc_addresses[0]}  (the gateway itself{tls})")
    else:
        count = len(grpc_addresses)
        lines += [
            f"  gRPC      {address}  (gateway {i}, one of {count} processes{tls})"
            for i, address in enumerate(grpc_addresses)
        ]
    lines.append(admin)
    if metrics_at:
        served_by = "gateway 0 answers for all" if len(grpc_addresses) > 1 else "the gateway's"
        lines.append(f"  metrics   {metrics_at}  (Prometheus; {served_by})")
    if database:
        lines.append(f"  database  psql '{database}'  (embedded PostgreSQL)")
    lines.append(f"  logs      Envoy's access log in {run_dir / 'access.log'}")
    warning = cleartext_warning(options)
    if warning:
        lines.append(f"WARNING: {warning}")
    lines.append("Press Ctrl-C to stop.")
    return lines


def _run(settings: Settings, stop: threading.Event, stack: contextlib.ExitStack) -> None:
    check_settings(settings)
    # Before the ports: a second stack on this directory is told so, not "port in use"; and
    # what a killed launcher left running on them is stopped first.
    lock = stack.enter_context(hold_data_dir(settings.embedded.data_dir))
    check_ports(settings)
    env = dict(os.environ)  # the child reads its settings as we did, plus what we decided
    env["GRPC_HOST"] = settings.server.grpc_host
    # A new secret at every start: how the gateway knows that a call came through its Envoy.
    sidecar = dataclasses.replace(settings.sidecar, sidecar_secret=secrets.token_urlsafe(32))
    settings = dataclasses.replace(settings, sidecar=sidecar)
    env["SIDECAR_SECRET"] = sidecar.sidecar_secret
    ports = gateway_ports(settings.server)
    database = ""
    configured = settings.database.database_dsn()
    if configured is not None:
        wait_for_database(settings.database, configured, stop)
    else:
        from datamorph_gateway.pg.devdb import start_embedded_database

        embedded = start_embedded_database(settings.embedded)
        stack.callback(embedded.stop)
        fit_connections(embedded, settings, len(ports))
        env["DATABASE_URL"] = embedded.dsn
        env["DB_READONLY_USER"] = embedded.reader_user
        env["DB_WATCHDOG_USER"] = embedded.watchdog_user
        env["DB_STATE_USER"] = embedded.state_user
        database = embedded.dsn
    if stop.is_set():
        raise _Stop

    # The gateways are behind their own Envoy, which the launcher stops first: there is no
    # traffic to move away, so no drain unless one was asked for.
    drain_s = settings.drain_period_s() if settings.server.drain_s >= 0 else 0.0
    env["DRAIN_S"] = str(drain_s)
    grace_s = settings.server.grace_period_s + drain_s
    metrics_dir = _metrics_directory(settings, len(ports))
    if metrics_dir:
        env["METRICS_MULTIPROCESS_DIR"] = metrics_dir
    gateways = [
        GatewayProcess(
            f"gateway {i}" if len(ports) > 1 else "the gateway",
            dict(env, GATEWAY_PROCESS_INDEX=str(i)),
            port,
            grace_s,
            metrics_dir=metrics_dir,
        )
        for i, port in enumerate(ports)
    ]
    stack.callback(_stop_together, gateways)
    _start_gateways(gateways, stop, lock)

    run_dir = Path(settings.embedded.data_dir).resolve() / "envoy"
    # Owner only: the admin socket in it is reachable by nobody else, even before Envoy
    # chmods it to 0600.
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    options = options_from_settings(
        settings,
        upstreams=[(_client_host(gateway.host), gateway.port) for gateway in gateways],
        access_log_path=str(run_dir / "access.log"),
    )
    envoy = EnvoyChild(
        run_dir,
        options,
        Path(sidecar.envoy_descriptor_file),
        envoy_binary(sidecar.envoy_binary),
    )
    stack.callback(envoy.stop)
    rest_host, rest_port = envoy.start()
    lock.record(envoy.kind, envoy.pid)

    def alive() -> None:
        _check_started(gateways)
        code = envoy.poll()
        if code is not None:
            raise LaunchError(f"Envoy exited at start-up with code {code} (see above)")

    _wait_healthy(rest_host, rest_port, stop, _probe_tls(settings.tls), alive)

    rest_options = dataclasses.replace(options, listen_host=rest_host, listen_port=rest_port)
    addresses = [gateway.address for gateway in gateways]
    metrics_at = ""
    if settings.metrics.metrics_port:
        host = _client_host(settings.server.grpc_host)
        metrics_at = f"http://{host}:{settings.metrics.metrics_port}/metrics"
    banner = _banner(rest_options, addresses, envoy.admin_address, database, run_dir, metrics_at)
    print("\n".join(banner), flush=True)

    server = settings.server
    policy = RestartPolicy(max_exits=server.restart_max, window_s=server.restart_window_s)
    supervisor = Supervisor([*gateways, envoy], policy, lock)
    while not stop.wait(_POLL_S):
        if _HANGUP.is_set():
            _HANGUP.clear()
            for gateway in gateways:
                gateway.reload()
        try:
            supervisor.check()
        except CrashLoop as exc:
            raise LaunchError(f"{exc}; the stack stopped", exc.code) from None


def _metrics_directory(settings: Settings, processes: int) -> str:
    """Where several gateway processes share their metrics (emptied of the last stack's),
    so that process 0's /metrics is the stack's total; "" for one process, or none."""
    if processes < 2 or not settings.metrics.metrics_port:
        return ""
    directory = Path(settings.embedded.data_dir).resolve() / "metrics"
    metrics_server.prepare_directory(directory)
    return str(directory)


def _start_gateways(
    gateways: Sequence[GatewayProcess], stop: threading.Event, lock: DataDirLock
) -> None:
    """Start every gateway process at once; return when all serve. One that exits first
    stops the start with its own reason."""
    for gateway in gateways:
        lock.record(gateway.kind, gateway.spawn())
    deadline = time.monotonic() + GatewayProcess.start_timeout_s
    while not all(gateway.ready() for gateway in gateways):
        _check_started(gateways)
        if stop.wait(_POLL_S):
            raise _Stop
        if time.monotonic() >= deadline:
            waiting = ", ".join(g.name for g in gateways if not g.ready())
            raise LaunchError(f"{waiting} did not start in {GatewayProcess.start_timeout_s:.0f} s")


def _check_started(gateways: Sequence[GatewayProcess]) -> None:
    for gateway in gateways:
        code = gateway.poll()
        if code is not None:
            raise gateway.exited(code, "at start-up")


def _stop_together(gateways: Sequence[GatewayProcess]) -> None:
    """Stop the gateway processes at once, each draining within its own grace period."""
    threads = [
        threading.Thread(target=gateway.stop, name=f"stop {gateway.name}") for gateway in gateways
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datamorph_gateway.launcher", description=__doc__
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)
    try:
        settings = load_settings(secret_loader=load_secret)
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        hosts = {"GRPC_HOST": settings.server.grpc_host, "REST_HOST": settings.sidecar.rest_host}
        check_exposure(settings.auth, hosts)
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return 2
    logging_setup.configure(settings.logging)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # SIGHUP is passed on to every gateway process (re-read the auth policy), not taken as an end.
    signal.signal(signal.SIGHUP, lambda signum, frame: _HANGUP.set())
    # The reason is printed once the stack is down, so that it is the last line.
    failed: LaunchError | None = None
    with contextlib.ExitStack() as stack:
        try:
            _run(settings, stop, stack)
        except _Stop:
            pass
        except LaunchError as exc:
            failed = exc
        except (RuntimeError, ConfigError, OSError) as exc:  # Envoy's, PostgreSQL's, DATA_DIR's
            failed = LaunchError(str(exc))
        finally:
            if stop.is_set():
                print(f"{PROG}: stopping", file=sys.stderr, flush=True)
    if failed is not None:
        print(f"{PROG}: {failed}", file=sys.stderr, flush=True)
        return failed.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
