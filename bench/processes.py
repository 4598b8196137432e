"""One gateway process against two: what running the gateway as several processes buys.

A Python process runs Python on one core at a time (the GIL), so on a bigger host the
gateway scales by processes (issue 12, ``GATEWAY_PROCESSES``). Two stacks run side by
side with the suite's gateway settings and the same database: one process behind an
Envoy, and two processes, each with its own port and pool, behind an Envoy of their own
that has both in its one cluster (round-robin). REST goes through each stack's Envoy.
Native gRPC goes straight to the gateway, as in the suite's matrix: with two processes
the load generator spreads its calls over both round-robin (``spread_target``), as a
gRPC client that knows every port would.

Before anything is timed, every process answers the probe right and the two-process
Envoy has both endpoints healthy: a second process that gets no calls measures nothing.
Each process's CPU over the whole comparison is recorded too, which shows the split.

A round runs every transport and concurrency once per stack, the two back to back in an
order that alternates each round, so a burst of other work falls on both alike across
rounds; the report pairs the two of each round and takes the median over rounds. Every
cell records the CPU each part spent (the gateway's processes summed, Envoy, PostgreSQL,
the load generator), from which ``bench/scaling.py`` projects larger hosts. Like the auth
comparison's pair, both stacks run without an auth policy, with ``--policy`` or not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from bench.scenarios import GATEWAY_GRPC, GATEWAY_REST, scenarios
from bench.stack import CpuMeter, StackError

if TYPE_CHECKING:
    from bench.suite import Stack, Suite

SCENARIO = "get_data_2e4"  # REST GetData of 10 rows of 20,000, as the matrix's
TRANSPORTS = (GATEWAY_REST, GATEWAY_GRPC)
CONCURRENCIES = (8, 64)
PROCESS_COUNTS = (1, 2)
ROUNDS = 5
QUICK_ROUNDS = 2
DURATION_S = 2
HEALTHY_WITHIN_S = 15.0  # Envoy checks each endpoint every second


def order(round_no: int) -> tuple[int, ...]:
    """The process counts in the order round `round_no` (from 1) runs them."""
    shift = (round_no - 1) % len(PROCESS_COUNTS)
    return PROCESS_COUNTS[shift:] + PROCESS_COUNTS[:shift]


def _machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        # What this process may run on (a container's or taskset's share of the machine).
        "cores_available": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def compare(suite: Suite, rounds: int = ROUNDS, duration_s: int = DURATION_S) -> dict[str, Any]:
    """Start both stacks, check them, run the rounds; the results' ``processes``."""
    scenario = next(s for s in scenarios() if s.name == SCENARIO)
    out: dict[str, Any] = {
        "scenario": SCENARIO,
        "title": scenario.title,
        "rounds": rounds,
        "duration_s": duration_s,
        "process_counts": list(PROCESS_COUNTS),
        "concurrencies": list(CONCURRENCIES),
        "grpc_path": "straight to the gateway's processes, round-robin (as the matrix's gRPC)",
        "machine": _machine(),
    }
    directory = suite.run_dir / "processes"
    with contextlib.ExitStack() as servers:
        stacks = {
            n: suite.start_gateway(servers, directory / str(n), {}, process_count=n)
            for n in PROCESS_COUNTS
        }
        for n, stack in stacks.items():
            _wait_healthy(stack, n)
        out["envoy_workers"] = stacks[PROCESS_COUNTS[0]].envoy.workers()
        out["probes"] = _probes(suite, scenario, stacks)
        meters = {
            n: CpuMeter({str(i): g.pid for i, g in enumerate(stack.gateways, 1)})
            for n, stack in stacks.items()
        }
        before = {n: meter.read() for n, meter in meters.items()}
        cells: list[dict[str, Any]] = []
        total = rounds * len(TRANSPORTS) * len(CONCURRENCIES) * len(PROCESS_COUNTS)
        for round_no in range(1, rounds + 1):
            for system in TRANSPORTS:
                for concurrency in CONCURRENCIES:
                    for n in order(round_no):
                        stack = stacks[n]
                        cell = suite.cell(scenario, system, concurrency, duration_s, stack=stack)
                        suite.check_alive(f"processes {n} {system[1]} c={concurrency}", stack)
                        cell.update(processes=n, round=round_no)
                        cells.append(cell)
                        suite.log_progress(len(cells), total, cell, f"processes {n} ")
        out["cells"] = cells
        # Each process's CPU seconds over all the rounds: an even split means both served.
        out["gateway_cpu_s_by_process"] = {
            str(n): [
                round(seconds, 2)
                for name, seconds in CpuMeter.spent(before[n], meter.read()).items()
                if name != "load generator"
            ]
            for n, meter in meters.items()
        }
    out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _wait_healthy(stack: Stack, processes: int) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while (healthy := stack.envoy.healthy_upstreams()) < processes:
        if time.monotonic() > deadline:
            raise StackError(
                f"Envoy in front of {processes} gateway processes has {healthy} healthy "
                f"endpoints after {HEALTHY_WITHIN_S:.0f} s; see {stack.envoy.log_path}"
            )
        time.sleep(0.1)


def _probes(suite: Suite, scenario: Any, stacks: dict[int, Stack]) -> dict[str, Any]:
    """REST through each Envoy, and gRPC to every process on its own; all must be right."""
    probes: dict[str, Any] = {}
    for n, stack in stacks.items():
        checks = {"rest": suite.probe(scenario, GATEWAY_REST, stack)}
        for i, gateway in enumerate(stack.gateways, 1):
            alone = dataclasses.replace(stack, gateway=gateway, siblings=())
            checks[f"grpc process {i}"] = suite.probe(scenario, GATEWAY_GRPC, alone)
        probes[str(n)] = checks
    failed = [
        f"{n} processes, {what}: {probe['status']} ({probe.get('detail')})"
        for n, checks in probes.items()
        for what, probe in checks.items()
        if not probe["ok"]
    ]
    if failed:
        raise StackError("the processes comparison's probes failed: " + "; ".join(failed))
    return probes
