"""deploy/systemd: the units pass `systemd-analyze verify` and are sandboxed, and their
command lines (ExecStart, ExecStartPre), parsed from the units, start a gateway and an Envoy
in front of it here.

`systemd-analyze verify` fails a unit whose ExecStart names a program that does not exist,
and /opt/datamorph-gateway does not exist on a development machine; so the tests write the
units again with /opt/datamorph-gateway pointing at a directory laid out like the install
(venv -> this checkout's .venv, envoy/gateway.binpb) and /etc/datamorph-gateway at the
example environment files. Only the paths change; every other line is verified as committed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..fixtures.process import gateway_env, reap
from ..fixtures.roles import roles_for
from .files import DEPLOY, ROOT, env_file, systemd_argv, unit_settings
from .test_container import free_port

SYSTEMD = DEPLOY / "systemd"
GATEWAY_UNIT = SYSTEMD / "datamorph-gateway@.service"
ENVOY_UNIT = SYSTEMD / "datamorph-envoy.service"
INSTALL = "/opt/datamorph-gateway"
CONFIG = "/etc/datamorph-gateway"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
}


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A directory laid out like an install: <dir>/opt is INSTALL, <dir>/etc is CONFIG."""
    (tmp_path / "opt" / "envoy").mkdir(parents=True)
    (tmp_path / "opt" / "venv").symlink_to(Path(sys.executable).parents[1])
    shutil.copy(ROOT / "envoy" / "gateway.binpb", tmp_path / "opt" / "envoy")
    shutil.copytree(SYSTEMD, tmp_path / "etc")
    return tmp_path


def localized(unit: Path, installed: Path, name: str = "") -> Path:
    text = unit.read_text(encoding="utf-8")
    text = text.replace(INSTALL, str(installed / "opt")).replace(CONFIG, str(installed / "etc"))
    path = installed / (name or unit.name)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_units_pass_systemd_analyze_verify(installed: Path) -> None:
    units = [
        localized(GATEWAY_UNIT, installed, "datamorph-gateway@50051.service"),
        localized(ENVOY_UNIT, installed),
    ]
    out = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr  # no warning either


@pytest.mark.parametrize("unit", [GATEWAY_UNIT, ENVOY_UNIT], ids=lambda p: p.name)
def test_the_units_are_sandboxed(unit: Path) -> None:
    settings = unit_settings(unit)
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], key
    user = settings.get("User", []) + settings.get("DynamicUser", [])
    assert user in (["datamorph"], ["yes"])
    assert settings["EnvironmentFile"][0].startswith(CONFIG)


def test_the_gateway_unit_allows_the_drain() -> None:
    settings = unit_settings(GATEWAY_UNIT)
    env = env_file(SYSTEMD / "gateway.env")
    assert settings["KillSignal"] == ["SIGTERM"]
    assert float(settings["TimeoutStopSec"][0]) > float(env["DRAIN_S"]) + float(
        env["GRACE_PERIOD_S"]
    )
    assert settings["RestartPreventExitStatus"] == ["2"]  # a configuration error


@pytest.fixture
def unit_gateway(installed: Path, seeded_database: str) -> Iterator[str]:
    """ExecStart of datamorph-gateway@PORT, with the example environment file, pointed at the
    test database: DATABASE_URL overrides its RDS_* keys, and the keys that would reach AWS or
    files this host lacks (CONFIG_SECRET_ID, DB_SSLROOTCERT, AUTH_POLICY_FILE) are emptied; the
    roles are the session's. No drain: nothing balances traffic in front of it."""
    port = str(free_port())
    settings = unit_settings(localized(GATEWAY_UNIT, installed))
    env = env_file(installed / "etc" / "gateway.env")
    for assignment in settings["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value
    env = {k: v.replace("%i", port) for k, v in env.items()}
    env.update(CONFIG_SECRET_ID="", DB_SSLROOTCERT="", AUTH_POLICY_FILE="")
    made = roles_for(seeded_database)  # the session's own reader, watchdog and state roles
    env.update(
        DATABASE_URL=seeded_database,
        DB_READONLY_USER=made.reader if made else "",
        DB_WATCHDOG_USER=made.watchdog if made else "",
        DB_STATE_USER=made.state if made else "",
        DRAIN_S="0",
        METRICS_PORT=str(free_port()),  # 9464 may be a developer's `make run`
    )
    argv = systemd_argv(settings["ExecStart"][0], env, port)
    proc = subprocess.Popen(argv, env={**gateway_env(), **env}, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"gRPC on 127.0.0.1:{port}" in line, line
        yield f"127.0.0.1:{port}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=float(settings["TimeoutStopSec"][0])) == 0
    finally:
        reap(proc)


def test_the_units_command_lines_serve_rest_through_envoy(
    installed: Path, unit_gateway: str
) -> None:
    """ExecStartPre renders Envoy's files from the installed descriptor, ExecStart runs Envoy
    on them, and REST /health answers through it from the gateway ExecStart started."""
    unit = localized(ENVOY_UNIT, installed)
    settings = unit_settings(unit)
    runtime = installed / "run"
    runtime.mkdir(mode=0o700)
    listen = free_port()
    env = env_file(installed / "etc" / "envoy.env")
    env.update(
        RUNTIME_DIRECTORY=str(runtime),
        ENVOY_LISTEN=f"127.0.0.1:{listen}",
        ENVOY_UPSTREAMS=f"--upstream {unit_gateway}",
    )
    process_env = {**os.environ, **env}
    workdir = settings["WorkingDirectory"][0]
    for line in settings["ExecStartPre"]:
        subprocess.run(
            systemd_argv(line, env), env=process_env, cwd=workdir, check=True, timeout=60
        )
    envoy = subprocess.Popen(
        systemd_argv(settings["ExecStart"][0], env),
        env=process_env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = _get_health(listen, deadline=time.monotonic() + 30)
        assert body["status"] == "healthy"
        assert (runtime / "admin.sock").is_socket()
    finally:
        envoy.send_signal(signal.SIGTERM)
        envoy.wait(timeout=float(settings["TimeoutStopSec"][0]))


def _get_health(port: int, deadline: float) -> dict[str, object]:
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            response = conn.getresponse()
            data = response.read()
            conn.close()
            if response.status == 200:
                body: dict[str, object] = json.loads(data)
                return body
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("Envoy never answered /health with 200")
        time.sleep(0.2)
