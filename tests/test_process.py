"""The gateway as operators run it: a process, reflection for grpcurl, clean exits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fixtures import roles
from .fixtures.process import gateway_env, reap, run_with_port_taken, start, stop

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture
def served(seeded_database: str) -> Iterator[str]:
    proc, address = start(gateway_env(DATABASE_URL=seeded_database))
    try:
        yield address
    finally:
        assert stop(proc) == 0


def grpcurl(*args: str) -> str:
    out = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout


def test_grpcurl_lists_services_through_reflection(served: str) -> None:
    services = grpcurl(served, "list").split()
    assert "datamorph.gateway.v1.DataMorphGateway" in services
    assert "grpc.health.v1.Health" in services
    methods = grpcurl(served, "list", "datamorph.gateway.v1.DataMorphGateway").split()
    assert "datamorph.gateway.v1.DataMorphGateway.GetSchemas" in methods


def test_grpcurl_calls_an_rpc(served: str) -> None:
    body = json.loads(
        grpcurl(
            "-d",
            '{"table_names": ["customers"], "limit": 2}',
            served,
            "datamorph.gateway.v1.DataMorphGateway/GetData",
        )
    )
    assert body["status"] == "success"
    assert len(body["data"]["customers"]) == 2
    health = json.loads(grpcurl(served, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}


@pytest.mark.slow
def test_embedded_default_serves_the_demo_data(tmp_path: Path) -> None:
    """With nothing configured: embedded PostgreSQL, seeded once, stopped on exit."""
    env = gateway_env(DATA_DIR=str(tmp_path / "data"))
    proc, address = start(env)
    try:
        body = json.loads(
            grpcurl(
                "-d",
                '{"query": "SELECT count(*) AS n FROM customers"}',
                address,
                "datamorph.gateway.v1.DataMorphGateway/ExecuteQuery",
            )
        )
        assert body["rows"][0]["n"] > 0
    finally:
        assert stop(proc) == 0
    postmaster = tmp_path / "data" / "postgres" / "postmaster.pid"
    assert not postmaster.exists(), "embedded PostgreSQL was left running"
    # A second start finds the data already seeded.
    proc, address = start(env)
    assert stop(proc) == 0


def test_port_in_use_is_one_clear_line(seeded_database: str) -> None:
    port, result = run_with_port_taken("GRPC_PORT", DATABASE_URL=seeded_database)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_configuration_is_one_clear_line(seeded_database: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway"],
        env=gateway_env(DATABASE_URL=seeded_database, DB_POOL_MAX="many"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "DB_POOL_MAX must be a number" in result.stderr
    assert "Traceback" not in result.stderr


def test_sighup_reloads_the_auth_policy(seeded_database: str, tmp_path: Path) -> None:
    """A change the file watch cannot see (same inode, size and mtime) still takes effect on
    SIGHUP; the old key stops working and the new one works, with no restart."""
    from datamorph_client import GatewayClient, GatewayError
    from datamorph_gateway.auth.keys import key_hash, new_key

    old, new = new_key(), new_key()
    policy = tmp_path / "policy.yaml"
    text = 'principals:\n  - name: ops\n    api_keys: ["{}"]\n    allow: ["*"]\n'
    policy.write_text(text.format(key_hash(old)))
    stat = policy.stat()
    proc, address = start(gateway_env(DATABASE_URL=seeded_database, AUTH_POLICY_FILE=str(policy)))
    try:
        with GatewayClient(address, timeout_s=10, api_key=old) as c:
            assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]
        with policy.open("r+") as handle:  # in place: same inode and size
            handle.write(text.format(key_hash(new)))
        os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with GatewayClient(address, timeout_s=10, api_key=old) as c:
            assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]  # not seen yet
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                with GatewayClient(address, timeout_s=10, api_key=new) as c:
                    assert c.execute_query("SELECT 1 AS one").rows == [{"one": 1}]
                break
            except GatewayError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with GatewayClient(address, timeout_s=10, api_key=old) as c, pytest.raises(GatewayError):
            c.execute_query("SELECT 1")
    finally:
        assert stop(proc) == 0


# -- failing fast, and waiting quietly -------------------------------------------------------


@pytest.fixture(scope="module")
def login(server_url: str) -> Iterator[roles.PasswordLogin]:
    with roles.password_login(server_url) as made:
        yield made


def _refusal_case(login: roles.PasswordLogin, case: str) -> tuple[str, str]:
    """DATABASE_URL for ``case``, and the server's reason the last line must give."""
    if case == "unknown role":
        user = f"nobody_{login.role}"
        # Under password authentication the server does not say whether the role exists.
        return login.url(user=user), f'user "{user}"'
    if case == "unknown database":
        dbname = f"absent_{login.role}"
        return login.url(dbname=dbname), f'FATAL: database "{dbname}" does not exist'
    if not login.asks_for_passwords():
        pytest.skip("the server lets this role in without its password")
    return (
        login.url(password="wrong-" + login.password),
        f'FATAL: password authentication failed for user "{login.role}"',
    )


@pytest.mark.parametrize("case", ["unknown role", "unknown database", "wrong password"])
def test_a_database_that_refuses_the_login_stops_the_start_with_its_reason(
    login: roles.PasswordLogin, case: str
) -> None:
    """Exit 2 at once, one line: what was tried (no password) and the server's own words."""
    url, reason = _refusal_case(login, case)
    result = subprocess.run(
        [sys.executable, "-m", "datamorph_gateway"],
        env=gateway_env(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[-1].startswith(
        "datamorph-gateway: configuration error: cannot connect to the database as the "
        "serving role (user "
    ), lines[-1]
    assert "FATAL: " in lines[-1]
    assert reason in lines[-1]
    assert login.password not in result.stdout + result.stderr


def test_a_database_not_up_yet_is_waited_for_quietly(tmp_path: Path) -> None:
    """Connection refused is for now: the gateway serves, answers UNAVAILABLE, and says so
    a few times at start-up, not once per attempt, health check or request."""
    from datamorph_client import GatewayClient, GatewayError

    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = reserved.getsockname()[1]
        env = gateway_env(
            DATABASE_URL=f"postgresql://nobody:pw-not-shown@127.0.0.1:{port}/absent",
            HEALTH_POLL_INTERVAL_S="0.1",
        )
        stderr_path = tmp_path / "stderr"
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "datamorph_gateway"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "gRPC on " in line, stderr_path.read_text()
            with GatewayClient(line.rsplit("gRPC on ", 1)[1].strip(), timeout_s=10) as client:
                assert client.health().status == "unhealthy"
                for _ in range(3):
                    with pytest.raises(GatewayError) as refused:
                        client.execute_query("SELECT 1")
                    assert refused.value.code.name == "UNAVAILABLE"
            time.sleep(1)  # about ten more health polls, all failing
        finally:
            assert stop(proc) == 0
    lines = stderr_path.read_text().splitlines()
    access = [line for line in lines if " datamorph_gateway.access " in line]
    audit = [line for line in lines if " datamorph_gateway.audit " in line]
    others = [line for line in lines if line not in access + audit]
    assert len(access) == 4, access  # one per call, and one audit line per query
    assert len(audit) == 3, audit
    assert len(others) <= 8, "\n".join(others)
    assert sum("Connection refused" in line for line in others) <= 2, "\n".join(others)
    assert "pw-not-shown" not in stderr_path.read_text()


def test_sigterm_drains_before_refusing_calls(seeded_database: str) -> None:
    """For DRAIN_S the process says NOT_SERVING (so Envoy moves traffic away) but still
    answers every call; then it stops and exits 0."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from datamorph_client import GatewayClient

    proc, address = start(gateway_env(DATABASE_URL=seeded_database, DRAIN_S="3"))
    try:
        with GatewayClient(address, timeout_s=10) as client, grpc.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            serving = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert serving == health_pb2.HealthCheckResponse.SERVING
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 2
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                != health_pb2.HealthCheckResponse.NOT_SERVING
            ):
                assert time.monotonic() < deadline, "never reported NOT_SERVING"
                time.sleep(0.05)
            # Draining: every call is still answered.
            for _ in range(5):
                assert client.execute_query("SELECT 1 AS one").rows == [{"one": 1}]
            report = client.health()  # UNAVAILABLE (REST 503) with the report
            assert report.status == "unhealthy"
            assert report.checks["gateway"].message.startswith("draining")
            assert proc.poll() is None
        assert proc.wait(timeout=20) == 0
    finally:
        reap(proc)
