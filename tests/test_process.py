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

from .fixtures.process import gateway_env, start, stop

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
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "datamorph_gateway"],
            env=gateway_env(DATABASE_URL=seeded_database, GRPC_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=30,
        )
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
