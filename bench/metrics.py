"""What the Prometheus metrics cost a call: the same cells with them off and on, interleaved.

Two gateways with the same settings run side by side, each behind an Envoy of its own: one
with ``METRICS_PORT=0`` (no metrics are made or recorded) and one serving ``/metrics`` on
a port of its own, as every gateway does by default. Before anything is timed, the one
with metrics must serve ``/metrics`` with the calls of its probes counted: metrics that
are silently off measure nothing.

The rounds are ``bench/ab.py``'s (c=1 by alternating requests, c=8 back to back with three
times as many rounds). Issue 14 judges REST GetData (``bench/targets.py``); gRPC GetData is
measured alike and reported. Tracing stays off in both (no ``OTEL_*``): off, it is a
``None`` check per call, which these cells include.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request
from typing import TYPE_CHECKING, Any

from bench import ab
from bench.scenarios import GATEWAY_GRPC, GATEWAY_REST, scenarios
from bench.stack import StackError, free_port

if TYPE_CHECKING:
    from bench.suite import Suite

OFF = "off"
VARIANTS = (OFF, "on")
SCENARIOS = ("get_data_2e4",)
TRANSPORTS = (GATEWAY_REST, GATEWAY_GRPC)
ROUNDS = 5
DURATION_S = 2
_COUNTED = re.compile(r'^datamorph_rpc_requests_total\{[^}]*method="GetData"[^}]*\} (\S+)$', re.M)


def scrape(port: int) -> str:
    """The gateway's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode("utf-8"))


def get_data_calls(page: str) -> float:
    """GetData calls counted on a /metrics page, over every status code."""
    return sum(float(value) for value in _COUNTED.findall(page))


def compare(suite: Suite, rounds: int = ROUNDS, duration_s: int = DURATION_S) -> dict[str, Any]:
    """Start the two gateways, probe both, check the metrics count, run the rounds."""
    by_name = {s.name: s for s in scenarios()}
    chosen = [by_name[name] for name in SCENARIOS]
    directory = suite.run_dir / "metrics"
    port = free_port()
    out: dict[str, Any] = {
        "rounds": rounds,
        "throughput_rounds": rounds * ab.THROUGHPUT_ROUNDS_FACTOR,
        "duration_s": duration_s,
        "variants": list(VARIANTS),
        "scenarios": list(SCENARIOS),
        "titles": {s.name: s.title for s in chosen},
        "concurrencies": [1, ab.THROUGHPUT_CONCURRENCY],
    }
    with contextlib.ExitStack() as servers:
        stacks = {
            OFF: suite.start_gateway(servers, directory / OFF, {"METRICS_PORT": "0"}),
            "on": suite.start_gateway(servers, directory / "on", {"METRICS_PORT": str(port)}),
        }
        plan = ab.Plan("metrics", VARIANTS, chosen, TRANSPORTS)
        out["probes"] = ab.probe(suite, plan, stacks)
        counted = get_data_calls(scrape(port))
        if counted < len(TRANSPORTS):
            raise StackError(
                f"the gateway with METRICS_PORT={port} counted {counted:g} GetData calls after "
                f"{len(TRANSPORTS)} probes: its numbers would not measure the metrics"
            )
        out["probe_calls_counted"] = counted
        out["cells"] = ab.run_rounds(suite, plan, stacks, rounds, duration_s)
        out["calls_counted"] = get_data_calls(scrape(port))
    return out
