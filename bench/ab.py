"""Interleaved rounds of one setting off against on: the machinery the auth and metrics
comparisons share (``bench/auth.py``, ``bench/metrics.py``).

Each comparison runs its own stacks side by side (one per setting) and names them by
variant; the first variant is the baseline ("off"). A round measures every scenario and
transport once:

- at c=1, each other variant is measured together with the baseline, request by request
  in turn (``bench/alternate.py``): a burst of other work on this shared machine then
  falls on both alike, which matters when the difference sought is hundredths of a
  millisecond. Always two systems, never three: a gateway that waits for two other
  requests between its own answers is slower than one that waits for one;
- at c=8 (throughput) each variant needs the machine to itself, so its cells run back to
  back, in an order that rotates each round. One round's on/off ratio varies by ~8% (sd)
  here, so c=8 runs ``THROUGHPUT_ROUNDS_FACTOR`` times as many rounds as c=1 (the c=1
  pairs run in the first ``rounds`` of them only): the median of 5 is good to about
  ±4.5%, too coarse for a 3–5% target; of 15, about ±2.6%.

The judgments (``bench/targets.py``) compare each round's variant with the same round's
baseline and take the median over rounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.loadstats import LoadResult
from bench.scenarios import GATEWAY_GRPC, Scenario
from bench.stack import StackError

if TYPE_CHECKING:
    from bench.suite import Stack, Suite

THROUGHPUT_CONCURRENCY = 8  # its cells run back to back; c=1 by alternating requests
THROUGHPUT_ROUNDS_FACTOR = 3


@dataclass(frozen=True)
class Plan:
    """What one comparison measures: its variants (the baseline first), those that are
    also paired with the baseline at c=1 only (``extra_pairs``), scenarios and transports."""

    name: str  # in log lines and check_alive's messages
    variants: tuple[str, ...]
    scenarios: Sequence[Scenario]
    transports: Sequence[tuple[str, str]]
    extra_pairs: tuple[str, ...] = ()

    @property
    def baseline(self) -> str:
        return self.variants[0]

    def order(self, round_no: int) -> tuple[str, ...]:
        """The variants in the order round `round_no` (from 1) runs them: rotated each round."""
        shift = (round_no - 1) % len(self.variants)
        return self.variants[shift:] + self.variants[:shift]


def probe(suite: Suite, plan: Plan, stacks: dict[str, Stack]) -> dict[str, Any]:
    """Every variant's probe of every scenario and transport (one answered call each);
    ``StackError`` if one failed: a variant that cannot answer measures nothing."""
    probes = {
        variant: {
            f"{s.name} {system[1]}": suite.probe(s, system, stacks[variant])
            for s in plan.scenarios
            for system in plan.transports
        }
        for variant in plan.variants
    }
    failed = [
        f"{variant} {cell}: {answer['status']} ({answer.get('detail')})"
        for variant, by_cell in probes.items()
        for cell, answer in by_cell.items()
        if not answer["ok"]
    ]
    if failed:
        raise StackError(f"the {plan.name} comparison's probes failed: " + "; ".join(failed))
    return probes


def run_rounds(
    suite: Suite,
    plan: Plan,
    stacks: dict[str, Stack],
    rounds: int,
    duration_s: int,
    first_round: int = 1,
) -> list[dict[str, Any]]:
    """Every cell of `rounds` c=1 rounds and ``THROUGHPUT_ROUNDS_FACTOR`` times as many c=8
    ones, each with its ``round`` and ``variant``; the rounds are numbered from
    `first_round` (a comparison that restarts its stacks between runs numbers on)."""
    throughput_rounds = rounds * THROUGHPUT_ROUNDS_FACTOR
    paired_count = len(plan.variants) - 1 + len(plan.extra_pairs)
    per_scenario = rounds * 2 * paired_count + throughput_rounds * len(plan.variants)
    total = len(plan.scenarios) * len(plan.transports) * per_scenario
    cells: list[dict[str, Any]] = []
    for round_no in range(first_round, first_round + throughput_rounds):
        for scenario in plan.scenarios:
            for system in plan.transports:
                variants = plan.order(round_no)
                paired = [v for v in variants if v != plan.baseline] + list(plan.extra_pairs)
                for variant in paired if round_no < first_round + rounds else []:
                    pair = (plan.baseline, variant) if round_no % 2 else (variant, plan.baseline)
                    for cell in _alternating(
                        suite, plan, scenario, system, stacks, pair, duration_s
                    ):
                        cell.update(round=round_no)
                        cells.append(cell)
                        suite.log_progress(
                            len(cells), total, cell, f"{plan.name} {cell['variant']:<7} "
                        )
                for variant in variants:
                    stack = stacks[variant]
                    cell = suite.cell(
                        scenario, system, THROUGHPUT_CONCURRENCY, duration_s, stack=stack
                    )
                    suite.check_alive(f"{plan.name} {variant} {scenario.name}", stack)
                    cell.update(variant=variant, round=round_no)
                    cells.append(cell)
                    suite.log_progress(len(cells), total, cell, f"{plan.name} {variant:<7} ")
    return cells


def _alternating(
    suite: Suite,
    plan: Plan,
    scenario: Scenario,
    system: tuple[str, str],
    stacks: dict[str, Stack],
    variants: tuple[str, str],
    duration_s: int,
) -> list[dict[str, Any]]:
    """The c=1 cells of the baseline and one variant, measured together by
    ``bench.alternate``; the baseline's cell names the variant it was paired with."""
    grpc = system == GATEWAY_GRPC
    window_s = duration_s * len(variants)  # each variant gets about a cell's requests
    (other,) = (v for v in variants if v != plan.baseline)
    spec: dict[str, Any] = {
        "transport": system[1],
        "method": scenario.rpc if grpc else scenario.rest_method,
        "path": scenario.rest_path,
        "request": scenario.grpc_request if grpc else scenario.body,
        "duration_s": window_s,
        "max_requests": suite.options.max_requests,
        "timeout_s": suite.request_timeout_s,
        "systems": [
            {
                "name": variant,
                "address": (
                    stacks[variant].gateway.address
                    if grpc
                    else f"{stacks[variant].envoy.host}:{stacks[variant].envoy.port}"
                ),
                "headers": stacks[variant].headers,
            }
            for variant in variants
        ],
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.alternate"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=window_s + suite.request_timeout_s + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.alternate failed: {done.stderr.strip()[-2000:]}")
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    for stack in {id(stacks[v]): stacks[v] for v in variants}.values():
        suite.settle(system, stack)
        suite.check_alive(f"{plan.name} {scenario.name} c=1", stack)
    return [
        {
            "scenario": scenario.name,
            "system": system[0],
            "transport": system[1],
            "concurrency": 1,
            "variant": variant,
            "client": "alternating",
            **({"paired_with": other} if variant == plan.baseline else {}),
            "extended": False,
            **LoadResult.from_dict(answers[variant]).to_dict(),
            "saturated": False,
        }
        for variant in variants
    ]
