"""Reading the processes comparison (``bench/processes.py``): its rounds, and what a bigger
host could serve, projected from the CPU one call costs each part of the stack.

The model. Every successful call costs CPU time in the gateway (its processes summed), in
Envoy, in PostgreSQL and in the load generator, each measured per call. A host of C cores
that runs some of these parts serves at most C ÷ (the CPU a call costs the parts on it).
Parts elsewhere do not count there: the load generator never does (callers are Lambdas and
clients on other machines), PostgreSQL does not when it is a server of its own (RDS), and
the projection then says how many cores it needs at that rate. Two more ceilings: a
gateway process runs Python on one core at a time (the GIL), so N processes serve at most
N ÷ the gateway's CPU per call (a simplification both ways: gRPC's and libpq's threads run
outside the GIL, while contention for it keeps a process below a full core); and Envoy's W
workers serve at most W ÷ Envoy's CPU per call. Throughput is the lowest of the ceilings.
Left out: contention that grows with cores (PostgreSQL's locks, memory bandwidth), the
network between hosts, and the idle time a closed loop of callers leaves, so each figure
is a ceiling; ``calibration`` applies the same model to the measuring machine, with
everything on it, to show how close a measured run came to its own ceiling.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

HOST = "the host's cores"
GIL = "one core per gateway process"
ENVOY = "Envoy's workers"
PROJECTED_CORES = (4, 8, 16)


@dataclass(frozen=True)
class CallCost:
    """CPU milliseconds one successful call costs each part (PostgreSQL: None when the
    bench ran against an external database, whose processes it cannot see)."""

    gateway_ms: float
    envoy_ms: float
    postgres_ms: float | None
    load_generator_ms: float = 0.0


@dataclass(frozen=True)
class Host:
    """Where the stack runs: its cores, the gateway's processes, Envoy's worker threads,
    and which of PostgreSQL and the load generator share the cores."""

    cores: int
    processes: int
    envoy_workers: int
    postgres_on_host: bool
    load_generator_on_host: bool = False


@dataclass(frozen=True)
class Projection:
    """Calls per second, the ceiling that sets it, and the cores each part keeps busy."""

    rps: float
    limit: str
    cores_busy: dict[str, float]


def project(cost: CallCost, host: Host) -> Projection:
    """The lowest of the ceilings the model draws for `cost` on `host`."""
    if cost.gateway_ms <= 0:
        raise ValueError("the gateway's CPU per call must be positive")
    if host.postgres_on_host and cost.postgres_ms is None:
        raise ValueError("PostgreSQL's CPU per call was not measured")
    on_host = cost.gateway_ms + cost.envoy_ms
    if host.postgres_on_host:
        on_host += cost.postgres_ms or 0.0
    if host.load_generator_on_host:
        on_host += cost.load_generator_ms
    ceilings = {
        HOST: host.cores * 1000 / on_host,
        GIL: host.processes * 1000 / cost.gateway_ms,
    }
    if cost.envoy_ms > 0:
        ceilings[ENVOY] = host.envoy_workers * 1000 / cost.envoy_ms
    limit = min(ceilings, key=lambda name: ceilings[name])
    rps = ceilings[limit]
    parts = {
        "gateway": cost.gateway_ms,
        "envoy": cost.envoy_ms,
        "postgres": cost.postgres_ms,
        "load generator": cost.load_generator_ms,
    }
    busy = {name: rps * ms / 1000 for name, ms in parts.items() if ms is not None}
    return Projection(rps, limit, busy)


def envoy_binds_above(cost: CallCost, workers: int, postgres_on_host: bool) -> float | None:
    """Host cores beyond which Envoy with `workers` threads, rather than the cores, sets
    the rate (one gateway process per core); None when Envoy costs nothing measurable."""
    if cost.envoy_ms <= 0:
        return None
    on_host = cost.gateway_ms + cost.envoy_ms
    if postgres_on_host:
        on_host += cost.postgres_ms or 0.0
    return workers * on_host / cost.envoy_ms


# -- the comparison's cells --------------------------------------------------------------


def cells(results: dict[str, Any], transport: str, c: int, processes: int) -> dict[int, Any]:
    """The comparison's cells of one stack, transport and concurrency, by round."""
    found: list[dict[str, Any]] = results.get("processes", {}).get("cells", [])
    return {
        cell["round"]: cell
        for cell in found
        if cell["transport"] == transport
        and cell["concurrency"] == c
        and cell["processes"] == processes
    }


def speedup(results: dict[str, Any], transport: str, c: int, processes: int = 2) -> list[float]:
    """Throughput of `processes` processes over one process's in the same round, per round."""
    one = cells(results, transport, c, 1)
    more = cells(results, transport, c, processes)
    return [
        more[r]["throughput_rps"] / one[r]["throughput_rps"]
        for r in sorted(one.keys() & more.keys())
        if one[r]["throughput_rps"] and more[r]["ok"]
    ]


def per_call_ms(cell: dict[str, Any], part: str) -> float | None:
    """CPU milliseconds `part` spent per successful call in `cell`; None if not metered."""
    cpu = cell.get("cpu_s", {})
    if not cell["ok"] or part not in cpu:
        return None
    return float(1000 * cpu[part] / cell["ok"])


def median_per_call_ms(found: list[dict[str, Any]], part: str) -> float | None:
    values = [v for cell in found if (v := per_call_ms(cell, part)) is not None]
    return statistics.median(values) if values else None


def call_cost(results: dict[str, Any], transport: str, c: int, processes: int) -> CallCost | None:
    """Each part's CPU per call, the median over the rounds; None without gateway CPU."""
    found = [cell for cell in cells(results, transport, c, processes).values() if cell["ok"]]
    gateway = median_per_call_ms(found, "gateway")
    if gateway is None:
        return None
    return CallCost(
        gateway_ms=gateway,
        envoy_ms=median_per_call_ms(found, "envoy") or 0.0,
        postgres_ms=median_per_call_ms(found, "postgres"),
        load_generator_ms=median_per_call_ms(found, "load generator") or 0.0,
    )


def calibration(
    results: dict[str, Any], transport: str, c: int, processes: int
) -> tuple[float, float] | None:
    """(modelled, measured) calls per second on the measuring machine itself, with every
    part on its cores: how close the run came to the model's ceiling."""
    comparison = results.get("processes", {})
    cost = call_cost(results, transport, c, processes)
    found = [cell for cell in cells(results, transport, c, processes).values() if cell["ok"]]
    if cost is None or cost.postgres_ms is None or not found:
        return None
    host = Host(
        cores=comparison["machine"]["cores_available"],
        processes=processes,
        envoy_workers=comparison["envoy_workers"],
        postgres_on_host=True,
        load_generator_on_host=True,
    )
    measured = statistics.median(cell["throughput_rps"] for cell in found)
    return project(cost, host).rps, measured
