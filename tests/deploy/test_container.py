"""deploy/docker: the Dockerfile passes hadolint and keeps its promises, compose's stack is
well formed, and the commands the image runs (ENTRYPOINT, HEALTHCHECK, the build's sidecar
render, compose's demo seeding) run here, parsed from the files, against a real gateway."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg2.extensions import parse_dsn

from datamorph_gateway.sidecar.process import validate

from ..fixtures.process import gateway_env, reap
from ..fixtures.roles import roles_for
from .files import (
    DEPLOY,
    DOCKERFILE,
    ENVOY_IMAGE,
    ROOT,
    Stage,
    dockerfile_env,
    dockerfile_stages,
    exec_form,
)

HADOLINT = Path(sys.executable).parent / "hadolint"
COMPOSE = DEPLOY / "docker" / "compose.yaml"


def final() -> Stage:
    return dockerfile_stages()[1][-1]


def image_paths() -> dict[str, Path]:
    """The final stage's COPY instructions from the build context: image path -> this checkout."""
    paths: dict[str, Path] = {}
    for args in final().all("COPY"):
        words = args.split()
        if not words[0].startswith("--from"):
            paths[words[1]] = ROOT / words[0]
    return paths


def on_this_host(argv: list[str]) -> list[str]:
    """An image command line run here: the venv's python, the checkout's copies of files."""
    paths = image_paths()
    return [sys.executable if w == "python" else str(paths.get(w, w)) for w in argv]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_hadolint_passes() -> None:
    out = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_image_is_multi_stage_pinned_and_non_root() -> None:
    args, stages = dockerfile_stages()
    assert len(stages) >= 2
    assert stages[0].name == "builder"
    base = args["PYTHON_IMAGE"]
    assert base.startswith("python:3.11.")
    assert "-slim" in base
    assert {stage.base for stage in stages} == {base}
    runtime = stages[-1]
    assert runtime.one("USER").split(":")[0] not in {"0", "root"}
    # No compiler, no apt, no package download in the final stage: the builder made the venv.
    for run in runtime.all("RUN"):
        assert not any(tool in run for tool in ("apt", "gcc", "pip install", "pip wheel")), run
    assert any(c.startswith("--from=builder") for c in runtime.all("COPY"))
    # Locked dependencies: the wheels are built against the repository's constraints.
    assert "--constraint requirements/constraints.txt" in stages[0].one("RUN")
    assert "--no-index" in stages[0].one("RUN")
    assert runtime.one("STOPSIGNAL") == "SIGTERM"  # what starts the drain
    assert exec_form(runtime.one("ENTRYPOINT")) == ["python", "-m", "datamorph_gateway"]


def test_the_compose_stack_is_well_formed() -> None:
    services = compose()["services"]
    assert {"postgres", "demo-data", "gateway", "envoy", "moto"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert ":" in image, name
        assert not image.endswith(":latest"), name
    assert services["envoy"]["image"] == ENVOY_IMAGE
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert services["moto"]["profiles"] == ["aws"]
    for name in ("postgres", "gateway", "moto"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["gateway"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "demo-data": {"condition": "service_completed_successfully"},
    }
    assert services["envoy"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    # Only Envoy is published, on this host's loopback; the README's examples use :8080.
    published = {n: s["ports"] for n, s in services.items() if "ports" in s and n != "moto"}
    assert published == {"envoy": ["127.0.0.1:8080:8080"]}
    # The gateway's health check is the image's own.
    image_check = exec_form(final().one("HEALTHCHECK").split(" CMD ", 1)[1])
    assert services["gateway"]["healthcheck"]["test"] == ["CMD", *image_check]
    assert services["gateway"]["stop_signal"] == final().one("STOPSIGNAL")
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), source


@pytest.fixture
def image_gateway(seeded_database: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """The image's ENTRYPOINT with its ENV, as compose runs it (anonymous callers allowed,
    since it binds 0.0.0.0), on a free port, against the test database."""
    env = gateway_env(**dockerfile_env(final()))
    made = roles_for(seeded_database)  # the session's own state role
    env.update(
        DATABASE_URL=seeded_database,
        DB_STATE_USER=made.state if made else "",
        GRPC_PORT=str(free_port()),
        AUTH_ALLOW_ANONYMOUS=compose()["services"]["gateway"]["environment"][
            "AUTH_ALLOW_ANONYMOUS"
        ],
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    argv = on_this_host(exec_form(final().one("ENTRYPOINT")))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "gRPC on 0.0.0.0:" in line, line
        yield proc, env
    finally:
        reap(proc)


def _health_check(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    argv = on_this_host(exec_form(final().one("HEALTHCHECK").split(" CMD ", 1)[1]))
    return subprocess.run(
        [*argv, *extra], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_the_images_entrypoint_serves_passes_its_healthcheck_and_drains_on_its_stopsignal(
    image_gateway: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    proc, env = image_gateway
    check = _health_check(env)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "SERVING"
    assert _health_check(env, "--alive").returncode == 0  # ECS's form
    proc.send_signal(getattr(signal, final().one("STOPSIGNAL")))
    grace = compose()["services"]["gateway"]["stop_grace_period"]
    assert proc.wait(timeout=float(grace.rstrip("s"))) == 0


def test_the_healthcheck_fails_when_nothing_answers() -> None:
    env = {**os.environ, "GRPC_PORT": str(free_port())}
    check = _health_check(env, "--alive", "--timeout-s", "0.5")
    assert check.returncode == 1
    assert "unhealthy: UNAVAILABLE" in check.stderr


def test_the_builds_sidecar_render_gives_a_config_envoy_accepts(tmp_path: Path) -> None:
    """The RUN that renders the ECS/pod sidecar's files into the image, run here."""
    run = next(r for r in final().all("RUN") if "datamorph_gateway.sidecar" in r)
    command, _, after = run.partition(" && ")
    assert after.startswith("chmod 0644 /etc/envoy/envoy.yaml")
    argv = [str(tmp_path) if w == "/etc/envoy" else w for w in on_this_host(shlex.split(command))]
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=60)
    validate(tmp_path / "envoy.yaml")


def test_composes_demo_seeding_command_runs(seeded_database: str) -> None:
    """demo-data's entrypoint, with the gateway's RDS_* keys pointing at the test database."""
    service = compose()["services"]["demo-data"]
    dsn = parse_dsn(seeded_database)
    env = {
        **os.environ,
        **{k: str(v) for k, v in service["environment"].items() if v is not None},
        "RDS_ENDPOINT": dsn.get("host", "127.0.0.1"),
        "RDS_PORT": dsn.get("port", "5432"),
        "RDS_DBNAME": dsn["dbname"],
        "RDS_USERNAME": dsn["user"],
        "RDS_PASSWORD": dsn.get("password", ""),
        "PGPASSFILE": dsn.get("passfile", ""),
    }
    out = subprocess.run(
        on_this_host(service["entrypoint"]), env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
