"""``python -m datamorph_gateway.launcher`` (``make run``) run as a user runs it.

A real subprocess on a fresh data directory with every port 0: embedded PostgreSQL, the
gateway processes and Envoy come up, the printed addresses serve, a child that is killed
is started again while the rest serves, a crash loop stops the stack, and Ctrl-C or
SIGTERM leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import psycopg2
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph.gateway.v1 import gateway_pb2_grpc as pb_grpc
from datamorph_client import GatewayClient, GatewayError
from datamorph_gateway.config import ServerSettings, Settings
from datamorph_gateway.sidecar.cluster import GATEWAY_CLUSTER
from datamorph_gateway.sidecar.process import admin_connection

from .fixtures.certs import make_pki
from .fixtures.envoy import REPO, Rest
from .fixtures.launcher import (
    Launched,
    launcher_children,
    launcher_environment,
    running_launcher,
    still_running,
)
from .fixtures.roles import PasswordLogin, password_login


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_the_stack_serves_and_a_signal_stops_all_of_it(
    tmp_path_factory: pytest.TempPathFactory, stop_signal: signal.Signals
) -> None:
    # Both runs share a data directory: the second reuses the cluster and its demo data.
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = data_dir.with_suffix(".stderr")
    with running_launcher(data_dir, stderr_path) as launched:
        rest = Rest(*launched.addresses["REST"])
        health = rest.get("/health")
        assert health.status == 200
        assert health.json()["status"] == "healthy"
        sample = rest.post("/get/data", {"table_names": ["customers"], "limit": 3})
        assert len(sample.json()["data"]["customers"]) == 3

        grpc_host, grpc_port = launched.addresses["gRPC"]
        for address in (f"{grpc_host}:{grpc_port}", "{}:{}".format(*launched.addresses["REST"])):
            with grpc.insecure_channel(address) as channel:
                stub = pb_grpc.DataMorphGatewayStub(channel)
                assert stub.Health(pb.HealthRequest(), timeout=10).status == "healthy"
                check = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                assert check.status == health_pb2.HealthCheckResponse.SERVING
        _admin_is_the_owners_alone(launched, data_dir)

        started = launcher_children(launched.process, data_dir)
        assert len(started) >= 3
        launched.process.send_signal(stop_signal)
        assert launched.process.wait(60) == 0
        assert not still_running(started), still_running(started)
    for host, port in launched.addresses.values():
        with socket.socket() as probe:
            assert probe.connect_ex((host, port)) != 0, f"{host}:{port} still answers"
    assert "Traceback" not in stderr_path.read_text()


def _admin_is_the_owners_alone(launched: Launched, data_dir: Path) -> None:
    """By default Envoy's admin API is a 0600 Unix socket in DATA_DIR, and no TCP port."""
    path = Path(launched.admin_socket)
    assert path == data_dir.resolve() / "envoy" / "admin.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert f"curl --unix-socket {path} http://localhost/ready" in "".join(launched.stdout)
    connection = admin_connection(str(path))
    try:
        connection.request("GET", "/ready")
        assert connection.getresponse().read().strip() == b"LIVE"
    finally:
        connection.close()
    envoy = next(p for p in psutil.Process(launched.process.pid).children() if p.name() == "envoy")
    listening = {
        c.laddr.port for c in envoy.net_connections("tcp") if c.status == psutil.CONN_LISTEN
    }
    assert listening == {launched.addresses["REST"][1]}, listening
    # What stopped the whole stack before: nothing answers it on the old admin port.
    if 9901 not in {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"}:
        with pytest.raises(ConnectionRefusedError):
            Rest("127.0.0.1", 9901).post("/quitquitquit", timeout_s=5)
    assert envoy.is_running()


def test_the_stack_with_mtls(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """TLS keys set: Envoy and the gateway both require a client certificate from our CA."""
    pki = make_pki(tmp_path / "pki")
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    tls = {
        "TLS_CERT_FILE": str(pki.server.cert),
        "TLS_KEY_FILE": str(pki.server.key),
        "TLS_CLIENT_CA_FILE": str(pki.ca.file),
    }
    with running_launcher(data_dir, data_dir.with_suffix(".stderr"), **tls) as launched:
        assert any("REST      https://" in line for line in launched.stdout), launched.stdout
        rest_address = "{}:{}".format(*launched.addresses["REST"])
        grpc_address = "{}:{}".format(*launched.addresses["gRPC"])
        client_cert = ("--cert", str(pki.client.cert), "--key", str(pki.client.key))
        curl = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.file)]
        url = f"https://{rest_address}/health"
        ok = subprocess.run([*curl, *client_cert, url], capture_output=True, text=True, check=False)
        assert '"status":"healthy"' in ok.stdout, ok.stderr
        refused = subprocess.run([*curl, url], capture_output=True, text=True, check=False)
        assert refused.returncode != 0
        for address in (grpc_address, rest_address):
            with GatewayClient(
                address,
                timeout_s=10,
                ca_file=str(pki.ca.file),
                cert_file=str(pki.client.cert),
                key_file=str(pki.client.key),
            ) as client:
                assert client.health().status == "healthy"


# -- supervision: a child that exits is started again ------------------------------------------

RECOVERY_DEADLINE_S = 5.0  # the bound for /health to answer 200 again


def _gateways(launched: Launched) -> dict[int, psutil.Process]:
    """The launcher's gateway processes that listen, by their gRPC port."""
    found = {}
    for child in psutil.Process(launched.process.pid).children():
        with contextlib.suppress(psutil.Error):
            if "datamorph_gateway" not in child.cmdline():
                continue
            for connection in child.net_connections("tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found[connection.laddr.port] = child
    return found


def _envoy(launched: Launched) -> psutil.Process:
    [envoy] = [p for p in psutil.Process(launched.process.pid).children() if p.name() == "envoy"]
    return envoy


def _status(rest: Rest, path: str = "/health") -> int:
    """The answer's status, 0 when none came (Envoy not listening)."""
    try:
        return rest.get(path, timeout_s=2).status
    except OSError:
        return 0


def _recorded(data_dir: Path) -> set[int]:
    """The pids the launcher's lock file names, for the next launcher to stop if it dies."""
    lines = (data_dir / "stack.lock").read_text().splitlines()[1:]
    return {int(line.split()[1]) for line in lines}


def _until_healthy(rest: Rest, since: float) -> float:
    """Seconds from ``since`` until /health answers 200 through Envoy (at most the bound)."""
    while _status(rest) != 200:
        elapsed = time.monotonic() - since
        assert elapsed < RECOVERY_DEADLINE_S, f"/health not 200 again after {elapsed:.1f} s"
        time.sleep(0.05)
    return time.monotonic() - since


def _said(stderr_path: Path, text: str) -> None:
    """Wait until the launcher's stderr holds ``text`` (the launcher looks ten times a second)."""
    deadline = time.monotonic() + 10
    while text not in stderr_path.read_text():
        assert time.monotonic() < deadline, f"never said {text!r}"
        time.sleep(0.02)


def _cluster(launched: Launched) -> dict[str, str]:
    """Envoy's gateway cluster, from its admin API: each host's address and health flags."""
    connection = admin_connection(launched.admin_socket)
    try:
        connection.request("GET", "/clusters")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return dict(re.findall(rf"^{GATEWAY_CLUSTER}::(\S+)::health_flags::(\S+)$", text, re.M))


def _until_healthy_in_envoy(launched: Launched, addresses: set[str], within_s: float) -> None:
    """Until Envoy's cluster is exactly ``addresses``, each passing its health check."""
    deadline = time.monotonic() + within_s
    while (cluster := _cluster(launched)) != dict.fromkeys(addresses, "healthy"):
        assert time.monotonic() < deadline, cluster
        time.sleep(0.1)


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_gateway_that_dies_is_started_again_while_the_rest_stays_up(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, kill_signal: signal.Signals
) -> None:
    """What issue 12 measured: a killed (or cleanly stopped) gateway took the whole stack
    down. Now it is started again on its port and /health answers 200 through Envoy within
    5 s, while the launcher, Envoy and PostgreSQL stay up; the lock file names the new pid."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = tmp_path / "stderr"
    with running_launcher(data_dir, stderr_path) as launched:
        rest = Rest(*launched.addresses["REST"])
        [(host, port)] = launched.grpc
        [gateway] = _gateways(launched).values()
        envoy = _envoy(launched)
        postmaster = _postmaster_pid(data_dir)

        since = time.monotonic()
        gateway.send_signal(kill_signal)
        gateway.wait(15)
        recovered_s = _until_healthy(rest, since)
        print(f"\n{kill_signal.name} to the gateway: /health 200 again after {recovered_s:.2f} s")

        again = _gateways(launched)
        assert set(again) == {port}
        assert again[port].pid != gateway.pid
        assert launched.process.poll() is None
        assert _envoy(launched).pid == envoy.pid
        assert _postmaster_pid(data_dir) == postmaster
        assert again[port].pid in _recorded(data_dir)
        assert gateway.pid not in _recorded(data_dir)
        _said(stderr_path, f"the gateway serves again on {host}:{port} (pid {again[port].pid})")
    said = stderr_path.read_text()
    how = "was killed by SIGKILL" if kill_signal is signal.SIGKILL else "exited with code 0"
    assert f"the gateway (pid {gateway.pid}, {host}:{port}) {how}; starting it again in 0.5 s" in (
        said
    )
    assert "Traceback" not in said


def test_an_envoy_that_dies_is_started_again_on_the_same_ports(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = tmp_path / "stderr"
    # ENVOY_ADMIN_PORT set: the admin API on a loopback port (0: a free one), as printed.
    with running_launcher(data_dir, stderr_path, ENVOY_ADMIN_PORT="0") as launched:
        admin = Rest(*launched.addresses["admin"])
        assert launched.addresses["admin"][0] == "127.0.0.1"
        assert admin.get("/ready").body.strip() == b"LIVE"
        rest = Rest(*launched.addresses["REST"])
        gateways = {port: p.pid for port, p in _gateways(launched).items()}
        envoy = _envoy(launched)

        since = time.monotonic()
        envoy.kill()
        envoy.wait(10)
        recovered_s = _until_healthy(rest, since)
        print(f"\nSIGKILL to Envoy: /health 200 again on the same port after {recovered_s:.2f} s")

        again = _envoy(launched)
        assert again.pid != envoy.pid
        assert admin.get("/ready").body.strip() == b"LIVE"  # the printed admin address too
        assert {port: p.pid for port, p in _gateways(launched).items()} == gateways
        assert launched.process.poll() is None
        assert again.pid in _recorded(data_dir)
        assert envoy.pid not in _recorded(data_dir)
    rest_address = "{}:{}".format(*launched.addresses["REST"])
    said = stderr_path.read_text()
    assert f"Envoy (pid {envoy.pid}, {rest_address}) was killed by SIGKILL; starting it again" in (
        said
    )
    assert "Traceback" not in said


def test_two_gateway_processes_behind_one_envoy_and_one_killed_leaves_the_other_serving(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = tmp_path / "stderr"
    env = {"GATEWAY_PROCESSES": "2", "ENVOY_HEALTH_CHECK_INTERVAL_S": "1"}
    with running_launcher(data_dir, stderr_path, **env) as launched:
        assert len(set(launched.grpc)) == 2, launched.stdout
        assert "(gateway 1, one of 2 processes)" in "".join(launched.stdout)
        for host, port in launched.grpc:
            with GatewayClient(f"{host}:{port}", timeout_s=10) as client:
                assert client.health().status == "healthy"
        addresses = {f"{host}:{port}" for host, port in launched.grpc}
        _until_healthy_in_envoy(launched, addresses, within_s=10)
        gateways = _gateways(launched)
        assert set(gateways) == {port for _, port in launched.grpc}
        assert {p.pid for p in gateways.values()} | {_envoy(launched).pid} <= _recorded(data_dir)

        # One of them killed: REST keeps answering from the other until it is back.
        rest = Rest(*launched.addresses["REST"])
        (_, port), (_, other_port) = launched.grpc
        victim, other = gateways[port], gateways[other_port]
        since = time.monotonic()
        victim.kill()
        victim.wait(10)
        answers: dict[int, int] = {}
        while port not in _gateways(launched):
            assert time.monotonic() - since < 30, "the killed process was not started again"
            status = _status(rest, "/health")
            answers[status] = answers.get(status, 0) + 1
        back_s = time.monotonic() - since
        _until_healthy_in_envoy(launched, addresses, within_s=30)
        healthy_s = time.monotonic() - since
        print(
            f"\nGATEWAY_PROCESSES=2, one SIGKILLed: listening again after {back_s:.2f} s, healthy "
            f"in Envoy's cluster after {healthy_s:.2f} s; /health meanwhile: {answers}"
        )
        # The other process served meanwhile, and Envoy sent a health check that reached the
        # dead one to it again (reads are retried): no caller saw the kill.
        assert set(answers) == {200}, answers
        assert _gateways(launched)[other_port].pid == other.pid
        assert launched.process.poll() is None
    assert "Traceback" not in stderr_path.read_text()


@pytest.mark.parametrize("cause", ["port taken", "config file broken"])
def test_a_gateway_that_keeps_exiting_stops_the_stack_with_its_reason(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, cause: str
) -> None:
    """A crash loop: RESTART_MAX exits within RESTART_WINDOW_S stop the stack, with the
    last exit's cause as the last line. Made here as it happens: something else took the
    gateway's port while it was down (exit 1), or an operator broke the config file that a
    restarted process reads again (a configuration error: exit 2)."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = tmp_path / "stderr"
    config = tmp_path / "config.json"
    config.write_text("{}")
    with (
        running_launcher(
            data_dir, stderr_path, RESTART_MAX="2", CONFIG_FILE=str(config)
        ) as launched,
        socket.socket() as taker,
    ):
        started = launcher_children(launched.process, data_dir)
        [(host, port)] = launched.grpc
        [gateway] = _gateways(launched).values()
        if cause == "config file broken":
            config.write_text('{"DB_POOL_MAX": 4,')  # read by the next start only
            code, reason = 2, f"configuration error: config file {config} is not readable JSON"
        else:
            code, reason = 1, f"cannot listen on {host}:{port}: address in use or not available"
        since = time.monotonic()
        gateway.kill()
        gateway.wait(10)
        if cause == "port taken":
            taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taker.bind((host, port))
            taker.listen()
        assert launched.process.wait(30) == code
        print(f"\ncrash loop ({cause}): the stack stopped {time.monotonic() - since:.2f} s later")
        assert not still_running(started), still_running(started)
    last = stderr_path.read_text().strip().splitlines()[-1]
    assert last.startswith(
        "datamorph-gateway: the gateway keeps exiting: 2 times within 60 s (RESTART_MAX=2, "
        f"RESTART_WINDOW_S=60), the last time it exited with code {code} at start-up: {reason}"
    ), last
    assert last.endswith("; the stack stopped"), last


def test_with_restart_max_1_a_child_that_dies_stops_the_rest(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """RESTART_MAX=1, for a supervisor of one's own (systemd, Kubernetes): no restarts."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = tmp_path / "stderr"
    with running_launcher(data_dir, stderr_path, RESTART_MAX="1") as launched:
        started = launcher_children(launched.process, data_dir)
        _envoy(launched).kill()
        assert launched.process.wait(60) == 1
        assert not still_running(started), still_running(started)
    last = stderr_path.read_text().strip().splitlines()[-1]
    assert last == (
        "datamorph-gateway: Envoy was killed by SIGKILL (RESTART_MAX=1: not started again); "
        "the stack stopped"
    )


def _strays(data_dir: Path) -> list[psutil.Process]:
    """Gateway processes of this data directory still running, whoever their parent is."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if (process.info["cmdline"] or [])[1:] != ["-m", "datamorph_gateway"]:
                continue
            if process.environ().get("DATA_DIR") == str(data_dir):
                found.append(process)
    return found


def test_a_stop_during_a_backoff_stops_cleanly(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """SIGTERM while a gateway waits to be started again: it is not started, nothing is left.

    Its port is taken, so each start fails and the backoff grows (0.5 s, then 1 s): the
    signal is sent as the 1 s one begins."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = tmp_path / "stderr"
    with running_launcher(data_dir, stderr_path) as launched, socket.socket() as taker:
        started = launcher_children(launched.process, data_dir)
        [(host, port)] = launched.grpc
        [gateway] = _gateways(launched).values()
        gateway.kill()
        gateway.wait(10)
        taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taker.bind((host, port))
        taker.listen()
        _said(stderr_path, "starting it again in 1 s")
        launched.process.terminate()
        assert launched.process.wait(30) == 0
        assert not still_running(started), still_running(started)
        assert not _strays(data_dir)
    said = stderr_path.read_text()
    assert said.count("at start-up: cannot listen") == 1, said  # no start after the signal
    assert "datamorph-gateway: stopping" in said
    assert "Traceback" not in said


# -- GATEWAY_PROCESSES: checked before anything starts ---------------------------------------


@pytest.mark.parametrize("value", ["0", "junk", "-1", "1.5", ""])
def test_gateway_processes_that_cannot_work_is_one_clear_line(tmp_path: Path, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway.launcher"],
        cwd=REPO,
        env=launcher_environment(tmp_path / "data", GATEWAY_PROCESSES=value),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "datamorph-gateway: configuration error: GATEWAY_PROCESSES must be a whole number of "
        f"processes (1 or more) or auto (one per CPU), got {value!r}"
    ]
    assert not (tmp_path / "data").exists()


def test_gateway_processes_auto_is_one_per_usable_cpu_each_on_its_port(tmp_path: Path) -> None:
    from datamorph_gateway.launcher import LaunchError
    from datamorph_gateway.preflight import check_ports, gateway_ports

    cpus = len(os.sched_getaffinity(0))
    auto = ServerSettings(gateway_processes="auto")
    assert gateway_ports(auto) == [50051 + i for i in range(cpus)]
    assert gateway_ports(ServerSettings(gateway_processes="3", grpc_port=0)) == [0, 0, 0]

    beyond = Settings.from_flat(
        gateway_processes="2", grpc_port=65535, rest_port=0, data_dir=str(tmp_path)
    )
    with pytest.raises(LaunchError, match=r"need GRPC_PORT to GRPC_PORT\+1, beyond 65535"):
        check_ports(beyond)
    # The second process's port is in use, the first one's is free.
    with _listening_above_a_free_port() as port:
        second = Settings.from_flat(gateway_processes="2", grpc_port=port - 1, rest_port=0)
        with pytest.raises(LaunchError, match=rf"{port} \(GRPC_PORT\+1\): already in use"):
            check_ports(second)


@contextlib.contextmanager
def _listening_above_a_free_port() -> Iterator[int]:
    """A port something listens on while the one below it is free."""
    while True:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with socket.socket() as below:
                try:
                    below.bind(("127.0.0.1", port - 1))
                except OSError:
                    continue
            yield port
            return


def test_the_embedded_database_is_sized_for_the_gateway_processes(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Each process has its own pools: 2 × (DB_POOL_MAX 60 + 2) do not fit in the embedded
    cluster's max_connections (100), so the launcher starts it with more, for this start
    only: nothing is written to postgresql.conf."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    stderr_path = tmp_path / "stderr"
    env = {"GATEWAY_PROCESSES": "2", "DB_POOL_MAX": "60"}
    with running_launcher(data_dir, stderr_path, **env) as launched:
        [dsn] = [line.split("'")[1] for line in launched.stdout if "psql '" in line]
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_setting('max_connections')::int")
            row = cur.fetchone()
        conn.close()
        assert row is not None
        assert row[0] >= 124
    assert "max_connections" in stderr_path.read_text()
    conf = (data_dir / "postgres" / "postgresql.conf").read_text()
    assert "max_connections = 100" in conf


def test_more_connections_than_the_launcher_gives_the_embedded_database_is_one_clear_line(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """2 × (DB_POOL_MAX 600 + 2) is more than the launcher gives its own PostgreSQL by itself
    (1000 connections): it stops before starting any gateway (exit 2) and says what fits."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    result = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway.launcher"],
        cwd=REPO,
        env=launcher_environment(data_dir, GATEWAY_PROCESSES="2", DB_POOL_MAX="600"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "datamorph-gateway: 2 gateway processes (GATEWAY_PROCESSES) may open 1204 database "
        "connections (DB_POOL_MAX 600 + 2 each), more than the embedded PostgreSQL can give "
        "them: 997 (max_connections 1000, the most `make run` sets by itself, 3 of them kept "
        "for superusers): lower DB_POOL_MAX to 496 or GATEWAY_PROCESSES to 1, or raise "
        "max_connections to at least 1207 in "
    ), last
    assert f"in {data_dir.resolve() / 'postgres' / 'postgresql.conf'}" in last
    assert "gRPC on" not in result.stdout + result.stderr
    assert not (data_dir / "postgres" / "postmaster.pid").exists()


def test_a_setting_that_cannot_work_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway.launcher"],
        cwd=REPO,
        env=launcher_environment(tmp_path / "data", ENVOY_START_TIMEOUT_S="900"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "ENVOY_START_TIMEOUT_S (900) must exceed ORCHESTRATOR_READ_TIMEOUT_S" in result.stderr
    assert not (tmp_path / "data" / "postgres").exists()


def test_a_port_in_use_is_one_clear_line_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "datamorph_gateway.launcher"],
            cwd=REPO,
            env=launcher_environment(tmp_path / "data", REST_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "REST_PORT" in lines[0]
    assert "already in use" in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "data" / "postgres").exists()


def test_the_banner_says_where_admin_is_and_warns_of_a_listener_open_in_clear(
    tmp_path: Path,
) -> None:
    from datamorph_gateway.launcher import _banner
    from datamorph_gateway.sidecar import SidecarOptions

    socket_path = str(tmp_path / "envoy" / "admin.sock")
    local = SidecarOptions(listen_port=8080, admin_socket=socket_path)
    lines = _banner(local, ["127.0.0.1:50051"], socket_path, "", tmp_path / "envoy")
    assert f"  admin     unix:{socket_path}  (Envoy's admin API, mode 0600" in lines[3]
    assert not any(line.startswith("WARNING") for line in lines)

    open_to_all = SidecarOptions(listen_host="0.0.0.0", listen_port=8080, admin_port=9901)
    lines = _banner(open_to_all, ["127.0.0.1:50051"], "127.0.0.1:9901", "", tmp_path / "envoy")
    assert lines[3].startswith("  admin     http://127.0.0.1:9901")
    [warning] = [line for line in lines if line.startswith("WARNING")]
    assert "0.0.0.0:8080 is reachable from other machines and has no TLS" in warning
    assert lines[-1] == "Press Ctrl-C to stop."


def test_the_stack_with_an_auth_policy_and_sighup(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """make run with AUTH_POLICY_FILE: 401 without a key, 200 with one, 403 for a write by a
    read-only principal; SIGHUP to the launcher reaches every gateway process, each of which
    re-reads the policy, and the stack keeps running."""
    from datamorph_gateway.auth.keys import key_hash, new_key

    old, new = new_key(), new_key()
    policy = tmp_path / "policy.yaml"
    text = 'principals:\n  - name: etl\n    api_keys: ["{}"]\n    allow: ["ExecuteQuery:read"]\n'
    policy.write_text(text.format(key_hash(old)))
    stat = policy.stat()
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"  # the cluster other tests made
    stderr_path = tmp_path / "stderr"
    env = {"AUTH_POLICY_FILE": str(policy), "GATEWAY_PROCESSES": "2"}
    with running_launcher(data_dir, stderr_path, **env) as launched:
        rest = Rest(*launched.addresses["REST"])
        select = {"query": "SELECT 1 AS one"}
        assert rest.post("/execute/query", select).status == 401
        assert rest.post("/execute/query", select, headers={"x-api-key": old}).status == 200
        write = {"query": "CREATE TABLE by_etl (a int)"}
        assert rest.post("/execute/query", write, headers={"x-api-key": old}).status == 403
        with policy.open("r+") as handle:  # unseen by the file watch: same inode, size, mtime
            handle.write(text.format(key_hash(new)))
        os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        launched.process.send_signal(signal.SIGHUP)
        assert len(launched.grpc) == 2
        deadline = time.monotonic() + 15
        for host, port in launched.grpc:  # each process, not only those Envoy picks
            with GatewayClient(f"{host}:{port}", timeout_s=10, api_key=new) as client:
                while (refused := _refusal(client, "SELECT 1 AS one")) is not None:
                    assert refused == grpc.StatusCode.UNAUTHENTICATED
                    assert time.monotonic() < deadline, f"{port} never took the new key"
                    time.sleep(0.2)
        assert rest.post("/execute/query", select, headers={"x-api-key": new}).status == 200
        assert rest.post("/execute/query", select, headers={"x-api-key": old}).status == 401
        assert launched.process.poll() is None
    assert "Traceback" not in stderr_path.read_text()


def _refusal(client: GatewayClient, query: str) -> grpc.StatusCode | None:
    """None when ``query`` ran, else the code it was refused with."""
    try:
        client.execute_query(query)
    except GatewayError as exc:
        return exc.code
    return None


# -- one stack per data directory -------------------------------------------------------------


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])


def test_a_second_stack_on_the_same_data_dir_refuses_and_the_first_serves_on(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A second launcher, or a gateway with its own embedded database, on a DATA_DIR a
    launcher runs on: one line naming DATA_DIR and the owner's pid, exit 1, and the first
    stack's PostgreSQL untouched."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    with running_launcher(data_dir, tmp_path / "first.stderr") as first:
        postmaster = _postmaster_pid(data_dir)
        for module in ("datamorph_gateway.launcher", "datamorph_gateway"):
            second = subprocess.run(
                [sys.executable, "-m", module],
                cwd=REPO,
                env=launcher_environment(data_dir),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert second.returncode == 1, second.stderr
            assert second.stderr.splitlines() == [
                f"datamorph-gateway: DATA_DIR {data_dir.resolve()} is in use by another stack "
                f"(pid {first.process.pid}): stop that one first, or set DATA_DIR to another "
                "directory"
            ]
            assert second.stdout == ""
        assert Rest(*first.addresses["REST"]).get("/health").status == 200
        assert _postmaster_pid(data_dir) == postmaster
        assert first.process.poll() is None


def test_a_killed_launchers_data_dir_is_taken_over_by_the_nextstart_launcher(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """SIGKILL leaves the lock free (the kernel drops it) and the stack running; the next
    launcher stops what the dead one left (gateway, Envoy, PostgreSQL) and serves."""
    data_dir = tmp_path_factory.getbasetemp() / "launcher-data"
    with running_launcher(data_dir, tmp_path / "first.stderr") as first:
        left = launcher_children(first.process, data_dir)
        first.process.kill()
        first.process.wait(10)
        assert len(still_running(left)) == len(left) >= 3  # all still running
        with running_launcher(data_dir, tmp_path / "second.stderr") as second:
            assert Rest(*second.addresses["REST"]).get("/health").status == 200
            assert not still_running(left), still_running(left)
            assert _postmaster_pid(data_dir) not in {p.pid for p in left}
    said = (tmp_path / "second.stderr").read_text()
    assert "stopping the gateway a dead stack left running" in said
    assert "stopping the Envoy a dead stack left running" in said
    assert "stopping a server left running" in said


# -- failing fast -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def login(server_url: str) -> Iterator[PasswordLogin]:
    with password_login(server_url) as made:
        yield made


@pytest.mark.parametrize("case", ["wrong password", "unknown database"])
def test_a_database_that_refuses_the_login_stops_make_run_with_its_reason(
    login: PasswordLogin, tmp_path: Path, case: str
) -> None:
    """The gateway's one line (the server's reason) is the launcher's last, said once; exit 2."""
    if case == "wrong password":
        if not login.asks_for_passwords():
            pytest.skip("the server lets this role in without its password")
        url = login.url(password="wrong-" + login.password)
        reason = f'FATAL: password authentication failed for user "{login.role}"'
    else:
        url = login.url(dbname=f"absent_{login.role}")
        reason = f'FATAL: database "absent_{login.role}" does not exist'
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway.launcher"],
        cwd=REPO,
        env=launcher_environment(tmp_path / "data", DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    print(f"\n{case}: make run stopped after {time.monotonic() - began:.1f} s")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "datamorph-gateway: configuration error: cannot connect to the database as the "
        f'serving role (user "{login.role}"'
    ), result.stderr
    assert last.endswith(reason), result.stderr
    assert result.stderr.count(reason) == 1, result.stderr
    assert login.password not in result.stdout + result.stderr
    assert result.stdout == ""


def test_an_unreachable_database_stops_make_run_within_10_s_with_the_reason(
    tmp_path: Path,
) -> None:
    """Nothing listens at DATABASE_URL's port: libpq's reason is the last line, exit 1,
    within 10 s, and no gateway was started."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway.launcher"],
        cwd=REPO,
        env=launcher_environment(
            tmp_path / "data", DATABASE_URL=f"postgresql://app@127.0.0.1:{port}/db"
        ),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    took_s = time.monotonic() - began
    print(f"\nan unreachable DATABASE_URL stopped make run after {took_s:.1f} s")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f'datamorph-gateway: cannot reach the database (user "app", database "db" on '
        f'127.0.0.1:{port}) after 8 s: connection to server at "127.0.0.1", port {port} '
        "failed: Connection refused; check DATABASE_URL (or RDS_*) and that the server is up"
    ]
    assert result.stdout == ""


def _time_wait_on_a_port(*, reuse: bool) -> int:
    """A port whose only holder is a connection in TIME-WAIT: the server's side closed
    first. ``reuse``: the listener set SO_REUSEADDR, as gRPC and Envoy do."""
    with socket.socket() as listener:
        if reuse:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = listener.accept()
            accepted.close()
            assert client.recv(1) == b""
    deadline = time.monotonic() + 5
    while True:
        states = {c.status for c in psutil.net_connections("inet") if c.laddr.port == port}
        if states == {psutil.CONN_TIME_WAIT}:
            return port
        assert time.monotonic() < deadline, states
        time.sleep(0.05)


def test_a_port_held_only_by_a_closed_connection_is_not_in_use(tmp_path: Path) -> None:
    from datamorph_gateway.launcher import LaunchError
    from datamorph_gateway.preflight import check_ports

    def check(port: int) -> None:
        check_ports(Settings.from_flat(rest_port=port, grpc_port=0, data_dir=str(tmp_path)))

    # Left by a server (SO_REUSEADDR): free, as the servers bind it.
    check(_time_wait_on_a_port(reuse=True))
    # Left by a socket without SO_REUSEADDR: no server can bind it until the kernel lets go,
    # so the launcher stops, but says what holds it rather than "in use".
    port = _time_wait_on_a_port(reuse=False)
    with pytest.raises(LaunchError) as caught:
        check(port)
    message = str(caught.value)
    assert f"cannot listen on 127.0.0.1:{port} (REST_PORT)" in message
    assert "TIME-WAIT" in message
    assert "in use" not in message
