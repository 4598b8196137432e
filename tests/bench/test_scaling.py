"""The processes comparison's reading: its rounds, the projection's arithmetic, its page
section, and the round-robin target its gRPC load uses (no timing here: the numbers
belong to bench/)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench import processes, report, scaling
from bench.clients import GrpcCaller
from bench.grpc_load import channel_options, spread_target
from bench.suite import Options


def _cell(
    transport: str,
    c: int,
    n: int,
    round_no: int,
    *,
    rps: float,
    cpu_ms: dict[str, float],
    duration_s: float = 2.0,
) -> dict[str, Any]:
    """A cell of `rps` calls per second over `duration_s`, each costing `cpu_ms` per part."""
    ok = round(rps * duration_s)
    return {
        "scenario": processes.SCENARIO,
        "system": "gateway",
        "transport": transport,
        "concurrency": c,
        "processes": n,
        "round": round_no,
        "throughput_rps": rps,
        "duration_s": duration_s,
        "ok": ok,
        "p50_ms": 5.0,
        "p99_ms": 9.0,
        "error_count": 0,
        "errors": {},
        "cpu_s": {part: ms * ok / 1000 for part, ms in cpu_ms.items()},
    }


REST_COST = {"gateway": 1.0, "envoy": 0.25, "postgres": 0.25, "load generator": 0.1}


def _results(
    one_rps: list[float], two_rps: list[float], one_cost: dict[str, float] = REST_COST
) -> dict[str, Any]:
    cells = []
    for round_no, (one, two) in enumerate(zip(one_rps, two_rps, strict=True), 1):
        for c in (8, 64):
            cells.append(_cell("rest", c, 1, round_no, rps=one, cpu_ms=one_cost))
            cells.append(_cell("rest", c, 2, round_no, rps=two, cpu_ms=REST_COST))
    return {
        "processes": {
            "scenario": processes.SCENARIO,
            "title": "GetData: 10 rows of 20,000",
            "rounds": len(one_rps),
            "duration_s": 2,
            "process_counts": [1, 2],
            "concurrencies": [8, 64],
            "envoy_workers": 2,
            "machine": {
                "cores": 2,
                "cores_available": 2,
                "load_average_at_start": [0.5, 0.5, 0.5],
                "load_average_at_end": [2.0, 1.0, 0.5],
            },
            "gateway_cpu_s_by_process": {"1": [10.0], "2": [6.0, 4.0]},
            "cells": cells,
        }
    }


def test_the_host_sets_the_rate_when_every_process_has_a_core() -> None:
    cost = scaling.CallCost(gateway_ms=1.0, envoy_ms=0.25, postgres_ms=0.25)
    # PostgreSQL elsewhere: 8 cores ÷ 1.25 ms = 6,400 calls/s; the gateway keeps 6.4 busy.
    apart = scaling.project(cost, scaling.Host(8, 8, 8, postgres_on_host=False))
    assert apart.rps == pytest.approx(6400)
    assert apart.limit == scaling.HOST
    assert apart.cores_busy["gateway"] == pytest.approx(6.4)
    assert apart.cores_busy["envoy"] == pytest.approx(1.6)
    assert apart.cores_busy["postgres"] == pytest.approx(1.6)  # on its own server
    # On the same host PostgreSQL's 0.25 ms joins the sum: 8 ÷ 1.5 ms.
    shared = scaling.project(cost, scaling.Host(8, 8, 8, postgres_on_host=True))
    assert shared.rps == pytest.approx(8000 / 1.5)


def test_one_process_is_held_to_one_core_whatever_the_host() -> None:
    cost = scaling.CallCost(gateway_ms=1.0, envoy_ms=0.25, postgres_ms=0.25)
    for cores in (4, 16):
        one = scaling.project(cost, scaling.Host(cores, 1, cores, postgres_on_host=False))
        assert one.limit == scaling.GIL
        assert one.rps == pytest.approx(1000)


def test_envoy_with_few_workers_becomes_the_limit_on_a_big_host() -> None:
    cost = scaling.CallCost(gateway_ms=1.0, envoy_ms=0.5, postgres_ms=None)
    # 2 workers ÷ 0.5 ms = 4,000/s; 16 cores ÷ 1.5 ms would be 10,667/s.
    capped = scaling.project(cost, scaling.Host(16, 16, 2, postgres_on_host=False))
    assert capped.limit == scaling.ENVOY
    assert capped.rps == pytest.approx(4000)
    # ... from 2 × 1.5 ÷ 0.5 = 6 cores on.
    assert scaling.envoy_binds_above(cost, 2, postgres_on_host=False) == pytest.approx(6)
    assert scaling.project(cost, scaling.Host(4, 4, 2, False)).limit == scaling.HOST
    assert scaling.envoy_binds_above(scaling.CallCost(1.0, 0.0, None), 2, False) is None


def test_postgres_on_the_host_needs_its_cpu_measured() -> None:
    cost = scaling.CallCost(gateway_ms=1.0, envoy_ms=0.2, postgres_ms=None)
    with pytest.raises(ValueError, match="PostgreSQL"):
        scaling.project(cost, scaling.Host(4, 4, 4, postgres_on_host=True))
    with pytest.raises(ValueError, match="gateway"):
        scaling.project(scaling.CallCost(0.0, 0.2, 0.1), scaling.Host(4, 4, 4, False))


def test_each_round_is_paired_with_the_one_process_of_the_same_round() -> None:
    # The machine slows down in round 2; both stacks with it, so the ratio holds.
    results = _results(one_rps=[1000, 600, 1000], two_rps=[1200, 780, 1100])
    assert scaling.speedup(results, "rest", 64) == pytest.approx([1.2, 1.3, 1.1])
    cost = scaling.call_cost(results, "rest", 64, 2)
    assert cost == pytest.approx(scaling.CallCost(1.0, 0.25, 0.25, 0.1))
    assert scaling.call_cost(results, "grpc", 64, 2) is None


def test_calibration_puts_everything_on_the_measuring_machine() -> None:
    results = _results(one_rps=[1000, 1000, 1000], two_rps=[1200, 1100, 1300])
    modelled, measured = scaling.calibration(results, "rest", 64, 2) or (0.0, 0.0)
    assert modelled == pytest.approx(2000 / 1.6)  # 2 cores ÷ (1 + 0.25 + 0.25 + 0.1) ms
    assert measured == 1200


def test_the_section_shows_the_rounds_and_the_projection(tmp_path: Path) -> None:
    # One process alone spends 0.8 ms of gateway CPU a call; two spend 1.0 ms.
    alone = {**REST_COST, "gateway": 0.8}
    results = _results(one_rps=[1000, 600, 1000], two_rps=[1200, 780, 1100], one_cost=alone)
    text = "\n".join(report._processes_section(results))
    assert "### One gateway process against two (issue 12)" in text
    assert "| REST (Envoy) | 64 | 2 | 1,100 (780 … 1,200) | 1.20× (1.10× … 1.30×) |" in text
    assert "60% / 40% of their gateway's CPU" in text
    assert "gateway 1.00 ms (one process alone: 0.80 ms), Envoy 0.25 ms, PostgreSQL 0.25" in text
    assert "the model gives 1,250 rps; the run measured 1,100 (88% of it)" in text
    # Envoy's 2 workers ÷ 0.25 ms = 8,000/s, reached at 2 × 1.25 ÷ 0.25 = 10 cores.
    assert "cap it at 8,000 rps, the rate the host's cores reach at 10.0 cores" in text
    # 16 cores: one process, 1 core ÷ 0.8 ms = 1,250/s. One per core, PostgreSQL elsewhere:
    # 16 ÷ 1.25 ms = 12,800/s, gateway 12.8 cores busy, PostgreSQL needs 3.2; on the host
    # 16 ÷ 1.5 ms = 10,667/s.
    assert (
        "| REST (Envoy) | 16 | 1,250 (one core per gateway process) | "
        "12,800 (the host's cores) | 12.8 / 3.2 | 3.2 | 10,667 (the host's cores) |"
    ) in text
    assert "Errors in all these cells: 0." in text


def test_without_the_comparison_there_is_no_section() -> None:
    assert report._processes_section({}) == []


def test_only_processes_runs_the_comparison_and_no_matrix(tmp_path: Path) -> None:
    def options(*only: str) -> Options:
        return Options(False, False, 1, 10, tmp_path, "", tmp_path, tmp_path, only=only)

    def parts(o: Options) -> tuple[bool, bool, bool]:
        return o.comparisons_only, o.with_auth, o.with_processes

    assert parts(options("processes")) == (True, False, True)
    assert parts(options("processes", "auth")) == (True, True, True)
    assert parts(options("processes", "health")) == (False, False, True)
    assert parts(options("auth")) == (True, True, False)
    assert parts(options()) == (False, True, True)


def test_the_processes_alternate_which_runs_first() -> None:
    assert [processes.order(r) for r in (1, 2, 3)] == [(1, 2), (2, 1), (1, 2)]


def test_a_spread_target_lists_ipv4_addresses_and_asks_for_round_robin() -> None:
    assert spread_target(["127.0.0.1:5"]) == "127.0.0.1:5"
    both = spread_target(["127.0.0.1:5", "127.0.0.1:6"])
    assert both == "ipv4:127.0.0.1:5,127.0.0.1:6"
    assert ("grpc.lb_policy_name", "round_robin") in channel_options(both)
    assert all(name != "grpc.lb_policy_name" for name, _ in channel_options("127.0.0.1:5"))
    for wrong in ("localhost:5", "[::1]:5", "127.0.0.1"):
        with pytest.raises(ValueError, match="expected IPv4 host:port"):
            spread_target([wrong, "127.0.0.1:6"])


class _Counter(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no stubs
    """Answers every unary call with empty bytes and counts them, per server."""

    def __init__(self, name: str, seen: collections.Counter[str]) -> None:
        self._name = name
        self._seen = seen
        self._lock = threading.Lock()

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self._seen[self._name] += 1
            return b""

        return grpc.unary_unary_rpc_method_handler(answer)


@pytest.fixture
def two_servers() -> Iterator[tuple[list[str], collections.Counter[str]]]:
    seen: collections.Counter[str] = collections.Counter()
    servers, addresses = [], []
    for name in ("first", "second"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers((_Counter(name, seen),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    try:
        yield addresses, seen
    finally:
        for server in servers:
            server.stop(None)


def test_calls_to_a_spread_target_reach_every_server(
    two_servers: tuple[list[str], collections.Counter[str]],
) -> None:
    addresses, seen = two_servers
    caller = GrpcCaller(spread_target(addresses))
    try:
        for _ in range(20):
            assert caller.call("Health", {}).ok
    finally:
        caller.close()
    assert set(seen) == {"first", "second"}
    assert sum(seen.values()) == 20
