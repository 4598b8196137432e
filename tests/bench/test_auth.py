"""The auth comparison's parts: its policy and credentials, and the load generators sending
them (no timing here: the numbers belong to bench/)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import ab, alternate, auth, auth_split
from bench.grpc_load import metadata_item
from bench.rest_load import run_wrk
from datamorph_gateway.auth.authenticator import Authenticator
from datamorph_gateway.auth.policy import load_policy
from datamorph_gateway.config import AuthSettings, AwsSettings
from datamorph_gateway.errors import Unauthenticated
from datamorph_gateway.identity import ClientIdentities
from tests.fixtures.recorder import Recorded, recording_server


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> auth.Credentials:
    return auth.write_policy(tmp_path_factory.mktemp("auth"))


def test_the_policy_holds_the_keys_hash_and_both_credentials_name_its_principal(
    credentials: auth.Credentials,
) -> None:
    text = credentials.policy_file.read_text()
    assert credentials.api_key not in text
    assert load_policy(path=str(credentials.policy_file)).principals[0].allow == {"*"}
    authenticator = Authenticator(
        AuthSettings(auth_policy_file=str(credentials.policy_file)),
        AwsSettings(),
        ClientIdentities(None),
    )
    for variant in ("api_key", "jwt"):
        context: Any = auth.StandInContext(credentials.headers(variant))
        assert authenticator.authorize("ExecuteQuery", context).name == auth.PRINCIPAL
    bare: Any = auth.StandInContext({})
    with pytest.raises(Unauthenticated):
        authenticator.authorize("ExecuteQuery", bare)


def test_variants_rotate_so_each_runs_first_in_turn() -> None:
    plan = ab.Plan("auth", auth.VARIANTS, (), ())
    assert plan.baseline == "off"
    assert [plan.order(r)[0] for r in (1, 2, 3, 4)] == ["off", "api_key", "jwt", "off"]
    assert all(sorted(plan.order(r)) == sorted(auth.VARIANTS) for r in range(1, 7))


def test_grpc_load_metadata_is_key_equals_value() -> None:
    assert metadata_item("X-Api-Key=dmgw_a=b") == ("x-api-key", "dmgw_a=b")
    with pytest.raises(argparse.ArgumentTypeError):
        metadata_item("x-api-key")


@pytest.fixture
def recorder() -> Iterator[Recorded]:
    with recording_server() as recorded:
        yield recorded


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make bench)")
def test_wrk_sends_the_headers_on_every_request(recorder: Recorded) -> None:
    result = run_wrk(
        recorder.url,
        "POST",
        {"table_names": ["t"]},
        concurrency=1,
        duration_s=1,
        max_requests=5,
        headers={"x-api-key": "dmgw_secret-_0"},
    )
    assert result.ok >= 5
    assert set(recorder.api_keys) == {"dmgw_secret-_0"}


def test_a_header_wrk_cannot_carry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="newline"):
        run_wrk(
            "http://127.0.0.1:9/",
            "GET",
            None,
            concurrency=1,
            duration_s=1,
            max_requests=1,
            headers={"x-api-key": "a\nb"},
        )


def test_alternate_sends_one_request_to_each_system_in_turn(recorder: Recorded) -> None:
    spec = {
        "transport": "rest",
        "method": "POST",
        "path": "/get/data",
        "request": {"table_names": ["t"]},
        "duration_s": 30,
        "max_requests": 6,
        "timeout_s": 5,
        "systems": [
            {"name": name, "address": f"127.0.0.1:{recorder.port}", "headers": {"x-api-key": name}}
            for name in ("off", "on")
        ],
    }
    results = alternate.run(spec)
    assert {name: r.ok for name, r in results.items()} == {"off": 3, "on": 3}
    # Each pass rotates which system goes first: off, on | on, off | off, on.
    assert recorder.api_keys == ["off", "on", "on", "off", "off", "on"]


class _RecordingSuite:
    """Stands in for bench.suite.Suite's start_gateway: records what it was asked to start."""

    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, str]]] = []

    def start_gateway(self, servers: Any, directory: Path, env: dict[str, str]) -> Any:
        self.started.append((directory.name, env))
        return _Stack(directory.name)


@dataclasses.dataclass(frozen=True)
class _Stack:
    """What bench.suite.Stack carries that the pair's variants differ in: here a name."""

    name: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@pytest.mark.parametrize(("run", "first"), [(0, "off"), (1, "on"), (2, "off")])
def test_each_run_starts_a_fresh_pair_in_turns(
    credentials: auth.Credentials, tmp_path: Path, run: int, first: str
) -> None:
    suite = _RecordingSuite()
    started = auth._start_pair(suite, None, tmp_path, credentials, run)  # type: ignore[arg-type]
    stacks: dict[str, Any] = dict(started)
    assert next(name for name, _ in suite.started) == first
    envs = dict(suite.started)
    assert envs == {"off": {}, "on": {"AUTH_POLICY_FILE": str(credentials.policy_file)}}
    assert stacks["off"].name == "off"
    assert stacks["off"].headers == {}
    assert stacks["api_key"].name == "on"
    assert stacks["api_key"].headers == {"x-api-key": credentials.api_key}
    assert stacks["jwt"].name == "on"
    assert stacks["jwt"].headers == {"authorization": f"Bearer {credentials.token}"}
    # The JWT sent to the gateway that ignores it: what carrying it costs.
    assert stacks[auth.CARRIED].name == "off"
    assert stacks[auth.CARRIED].headers == stacks["jwt"].headers


@pytest.mark.parametrize("variant", ["api_key", "jwt"])
def test_auth_split_pairs_differ_in_one_thing_each(
    credentials: auth.Credentials, variant: str
) -> None:
    """Each pair of bench.auth_split changes one thing from its first system to its second:
    nothing, the process, the credential carried, the policy that checks it."""
    sent = credentials.headers(variant)
    assert sent
    assert auth_split.pairs(credentials, variant) == {
        "A/A off": [("off", {}), ("off", {})],
        "two gateways": [("off", {}), ("off2", {})],
        f"{variant} carried": [("off", {}), ("off", sent)],
        f"{variant} checked": [("off", {}), ("on", sent)],
        "A/A on": [("on", sent), ("on", sent)],
    }
