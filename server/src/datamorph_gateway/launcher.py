"""``python -m datamorph_gateway.launcher`` (``make run``): the whole stack, one command.

It starts, in order and each only once the one before is up: the embedded PostgreSQL
(unless a database is configured), the gateway (``python -m datamorph_gateway``, as a
child process: the very entry point a deployment runs, pointed at that database), and
Envoy in front of it. It waits until REST ``/health`` answers 200 through Envoy, prints the
addresses, and on Ctrl-C or SIGTERM stops Envoy, then the gateway, then PostgreSQL.

Each child runs in a process group of its own, so a Ctrl-C reaches only the launcher,
which then stops them in that order instead of all at once. If the launcher itself is
killed with SIGKILL they are left running; the next start on the same data directory
stops them (the gateway and Envoy it recorded, and a PostgreSQL left running) and starts
afresh.

One stack per data directory: the launcher holds ``DATA_DIR/stack.lock`` (``datadir``)
while it runs, so a second one on the same directory stops at once with one line naming
the first one's pid, and never touches its database. A gateway that cannot start says
why on its last line (a database refusing the login, a port in use...); the launcher
repeats that line as its own and exits with the gateway's code. Exit codes: 0 stopped
by a signal, 1 something failed or is taken (a port, the data directory), 2 the
configuration is wrong (a setting, or a database that refuses the login).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO

import psutil

from datamorph_gateway import __version__, logging_setup
from datamorph_gateway.auth.authenticator import check_exposure
from datamorph_gateway.config import Settings, load_settings
from datamorph_gateway.datadir import hold_data_dir
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.secrets import load_secret
from datamorph_gateway.sidecar import EnvoyProcess, SidecarOptions, envoy_binary
from datamorph_gateway.sidecar.config import (
    LISTENER,
    cleartext_warning,
    options_from_settings,
    write_config,
)

PROG = "datamorph-gateway"
_READY_LINE = re.compile(r"gRPC on (\S+)\s*$")
_GATEWAY_START_TIMEOUT_S = 120.0  # covers the database's connect attempts
_ENVOY_START_TIMEOUT_S = 30.0
_HEALTHY_TIMEOUT_S = 60.0
_POLL_S = 0.1
_HEALTHY_POLL_MAX_S = 1.0


class LaunchError(RuntimeError):
    """A part of the stack did not start; the message says which and why.

    ``code`` is the launcher's exit code: 2 when the configuration is wrong, else 1.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Stop(Exception):
    """Ctrl-C or SIGTERM arrived while starting."""


class GatewayProcess:
    """``python -m datamorph_gateway`` as a child; its address is read from its ready line.

    Its output is passed through, except its last words: the one line it prints when it
    cannot go on (``datamorph-gateway: ...``), which the launcher reports as its own.
    """

    def __init__(self, env: dict[str, str], grace_s: float) -> None:
        self._env = env
        self._grace_s = grace_s
        self._process: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._ready = threading.Event()
        self._last_words = ""
        self.address = ""

    def start(self, stop: threading.Event, spawned: Callable[[int], object]) -> str:
        """Start it, tell ``spawned`` its pid at once, and return its address once it serves."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "datamorph_gateway"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        spawned(self._process.pid)
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read_stdout,
                args=(self._process.stdout,),
                name="gateway-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=self._read_stderr,
                args=(self._process.stderr,),
                name="gateway-stderr",
                daemon=True,
            ),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + _GATEWAY_START_TIMEOUT_S
        while not self._ready.wait(_POLL_S):
            if stop.is_set():
                raise _Stop
            code = self.poll()
            if code is not None:
                raise self.exited(code, "at start-up")
            if time.monotonic() >= deadline:
                raise LaunchError(f"the gateway did not start in {_GATEWAY_START_TIMEOUT_S:.0f} s")
        return self.address

    def exited(self, code: int, when: str) -> LaunchError:
        """The launcher's error for a gateway that exited: its own last words, if it said any.

        A configuration error (exit 2, e.g. a database that refuses the login) is reported as
        the gateway worded it, so the reason is the launcher's last line too.
        """
        for reader in self._readers:
            reader.join(timeout=5)  # its last line may still be in the pipe
        words, self._last_words = self._last_words.removeprefix(f"{PROG}: "), ""
        if code == 2 and words:
            return LaunchError(words, code=2)
        said = f": {words}" if words else " (see above)"
        return LaunchError(f"the gateway exited {when} with code {code}{said}")

    def _read_stdout(self, stream: IO[bytes]) -> None:
        """Take the address from the ready line; pass anything else through."""
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            match = _READY_LINE.search(line)
            if match and not self._ready.is_set():
                self.address = match.group(1)
                self._ready.set()
            else:
                sys.stdout.write(line)
                sys.stdout.flush()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        """Pass the log through; keep the line the gateway exits with for ``exited``."""
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            if line.startswith(f"{PROG}: "):
                self._last_words = line.strip()
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def poll(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def reload(self) -> None:
        """SIGHUP: the gateway re-reads its auth policy."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM (the gateway drains for its grace period), then SIGKILL; always reaped."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(self._grace_s + 10)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        if self._last_words and process.returncode:  # not reported by ``exited``: say it now
            print(self._last_words, file=sys.stderr, flush=True)
            self._last_words = ""


_HANGUP = threading.Event()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _check_settings(settings: Settings) -> None:
    """Fail before starting anything on a setting that cannot work."""
    if settings.envoy_start_timeout_s <= settings.orchestrator_read_timeout_s:
        raise LaunchError(
            f"ENVOY_START_TIMEOUT_S ({settings.envoy_start_timeout_s:g}) must exceed "
            f"ORCHESTRATOR_READ_TIMEOUT_S ({settings.orchestrator_read_timeout_s:g}), or Envoy "
            "ends StartWorkflow calls before the orchestrator answers"
        )
    try:
        options_from_settings(settings, upstreams=[(settings.grpc_host, 0)], access_log_path="")
    except ValueError as exc:
        raise LaunchError(f"invalid REST_*, ENVOY_*, CORS_* or DATA_DIR setting: {exc}") from None


def _check_ports(settings: Settings) -> None:
    ports = [
        ("REST_PORT", settings.rest_host, settings.rest_port),
        ("GRPC_PORT", settings.grpc_host, settings.grpc_port),
    ]
    if settings.envoy_admin_port >= 0:  # else a Unix socket
        ports.append(("ENVOY_ADMIN_PORT", settings.envoy_admin_host, settings.envoy_admin_port))
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


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104


def _probe_tls(settings: Settings) -> ssl.SSLContext | None:
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
    host: str, port: int, stop: threading.Event, tls: ssl.SSLContext | None = None
) -> None:
    """Until REST /health answers 200 through Envoy: database, gateway and Envoy are up.

    Polled often at first, then at most every second: a database that is still starting
    costs one access-log line a second, not ten.
    """
    deadline = time.monotonic() + _HEALTHY_TIMEOUT_S
    last = "no answer"
    pause = _POLL_S
    while True:
        if stop.is_set():
            raise _Stop
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
    options: SidecarOptions, grpc_address: str, admin_address: str, database: str, run_dir: Path
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
        f"  gRPC      {grpc_address}  (the gateway itself{tls})",
        admin,
    ]
    if database:
        lines.append(f"  database  psql '{database}'  (embedded PostgreSQL)")
    lines.append(f"  logs      Envoy's access log in {run_dir / 'access.log'}")
    warning = cleartext_warning(options)
    if warning:
        lines.append(f"WARNING: {warning}")
    lines.append("Press Ctrl-C to stop.")
    return lines


def _run(settings: Settings, stop: threading.Event, stack: contextlib.ExitStack) -> int:
    _check_settings(settings)
    # Before the ports: a second stack on this directory is told so, not "port in use"; and
    # what a killed launcher left running on them is stopped first.
    lock = stack.enter_context(hold_data_dir(settings.data_dir))
    _check_ports(settings)
    env = dict(os.environ)  # the child reads its settings as we did, plus what we decided
    env["GRPC_HOST"] = settings.grpc_host
    env["GRPC_PORT"] = str(settings.grpc_port)
    # A new secret at every start: how the gateway knows that a call came through its Envoy.
    settings = dataclasses.replace(settings, sidecar_secret=secrets.token_urlsafe(32))
    env["SIDECAR_SECRET"] = settings.sidecar_secret
    database = ""
    if settings.database_dsn() is None:
        from datamorph_gateway.embedded_db import start_embedded_database

        embedded = start_embedded_database(settings)
        stack.callback(embedded.stop)
        env["DATABASE_URL"] = embedded.dsn
        env["DB_READONLY_USER"] = embedded.reader_user
        env["DB_WATCHDOG_USER"] = embedded.watchdog_user
        database = embedded.dsn
    if stop.is_set():
        raise _Stop

    # One gateway behind its own Envoy, which the launcher stops first: there is no traffic
    # to move away, so no drain unless one was asked for.
    drain_s = settings.drain_period_s() if settings.drain_s >= 0 else 0.0
    env["DRAIN_S"] = str(drain_s)
    gateway = GatewayProcess(env, settings.grace_period_s + drain_s)
    stack.callback(gateway.stop)
    grpc_address = gateway.start(stop, lambda pid: lock.record("gateway", pid))
    grpc_host, _, grpc_port = grpc_address.rpartition(":")

    run_dir = Path(settings.data_dir).resolve() / "envoy"
    # Owner only: the admin socket in it is reachable by nobody else, even before Envoy
    # chmods it to 0600.
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    options = options_from_settings(
        settings,
        upstreams=[(_client_host(grpc_host), int(grpc_port))],
        access_log_path=str(run_dir / "access.log"),
    )
    config = write_config(run_dir, options, Path(settings.envoy_descriptor_file))
    envoy = EnvoyProcess(config, binary=envoy_binary(settings.envoy_binary))
    stack.callback(envoy.stop)
    envoy.start(_ENVOY_START_TIMEOUT_S)
    lock.record("Envoy", envoy.pid)
    rest_host, rest_port = envoy.listener_address(LISTENER)
    _wait_healthy(rest_host, rest_port, stop, _probe_tls(settings))

    rest_options = dataclasses.replace(options, listen_host=rest_host, listen_port=rest_port)
    banner = _banner(rest_options, grpc_address, envoy.admin_address, database, run_dir)
    print("\n".join(banner), flush=True)

    while not stop.wait(_POLL_S):
        if _HANGUP.is_set():
            _HANGUP.clear()
            gateway.reload()
        code = gateway.poll()
        if code is not None:
            raise gateway.exited(code, "unexpectedly")
        code = envoy.poll()
        if code is not None:
            raise LaunchError(f"Envoy exited unexpectedly with code {code}; stopping")
    return 0


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
        check_exposure(settings, {"GRPC_HOST": settings.grpc_host, "REST_HOST": settings.rest_host})
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return 2
    logging_setup.configure(settings)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # SIGHUP is passed on to the gateway (re-read the auth policy), not taken as an end.
    signal.signal(signal.SIGHUP, lambda signum, frame: _HANGUP.set())
    with contextlib.ExitStack() as stack:
        try:
            return _run(settings, stop, stack)
        except _Stop:
            return 0
        except LaunchError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
            return exc.code
        except (RuntimeError, ConfigError, OSError) as exc:  # Envoy's, PostgreSQL's, DATA_DIR's
            print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            if stop.is_set():
                print(f"{PROG}: stopping", file=sys.stderr, flush=True)
    return 0  # pragma: no cover - the with block always returns


if __name__ == "__main__":
    sys.exit(main())
