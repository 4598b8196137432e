"""``mypy --strict`` on a caller sees no ``Any`` in what either client answers.

typed_caller.py uses every method of both clients and puts each answer in a precisely
typed variable; mypy checks it with ``--disallow-any-expr``, which rejects any expression
of type ``Any`` in that file. The same file then runs against the gateway, so the types
it states are the types the calls return.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from datamorph_client import GatewayClient
from datamorph_client.aio import AsyncGatewayClient
from datamorph_gateway.app import Gateway

from . import typed_caller

REPO = Path(__file__).resolve().parents[2]
CALLER = Path(typed_caller.__file__)


def mypy(target: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """Strict mypy, with no Any allowed in ``target`` (the modules it imports are
    followed for their types, their own errors left to ``make lint``)."""
    command = [
        sys.executable, "-m", "mypy", "--strict", "--disallow-any-expr",
        "--disallow-any-explicit", "--follow-imports=silent", "--no-error-summary",
        "--cache-dir", str(cache), "--python-version", "3.11", str(target),
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_mypy_strict_sees_no_any_in_the_answers(tmp_path: Path) -> None:
    checked = mypy(CALLER, tmp_path / "cache")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check bites: a value the client leaves untyped is caught.
    leaky = tmp_path / "leaky.py"
    leaky.write_text("from datamorph_client.values import encode_param\nsent = encode_param(1)\n")
    caught = mypy(leaky, tmp_path / "cache")
    assert caught.returncode == 1
    assert 'Expression has type "Any"' in caught.stdout


def test_the_typed_caller_runs_against_the_gateway(gateway: Gateway) -> None:
    with GatewayClient(gateway.address, timeout_s=20) as client:
        target = f"typed_sync_{uuid.uuid4().hex[:8]}"
        assert typed_caller.use_sync(client, target) == 9007199254740993

    async def use_async() -> int:
        async with AsyncGatewayClient(gateway.address, timeout_s=20) as client:
            return await typed_caller.use_async(client)

    assert asyncio.run(use_async()) == 9007199254740993
