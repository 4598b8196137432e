"""docs/benchmarks.md and its plots, rendered from one results file.

Everything on the page is computed from the JSON, so the page and the raw numbers
cannot disagree; the only hand-written part is bench/analysis.md (the reading of the
numbers and the profile), included verbatim under its own heading.
"""

from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import scaling, targets

SYSTEM_LABELS = {
    "gateway/rest": "Gateway REST (Envoy)",
    "gateway/grpc": "Gateway gRPC",
    "baseline/rest": "Flask baseline",
    "limit/sql": "Limit (psycopg2)",
}
SYSTEM_COLORS = {
    "gateway/rest": "#1f77b4",
    "gateway/grpc": "#2ca02c",
    "baseline/rest": "#d62728",
    "limit/sql": "#7f7f7f",
}
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def _key(cell: dict[str, Any]) -> str:
    return f"{cell['system']}/{cell['transport']}"


def _cells(results: dict[str, Any], scenario: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(_key(c), c["concurrency"]): c for c in results["cells"] if c["scenario"] == scenario}


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "n/a"
    text = (
        f"{_num(cell['throughput_rps'])} rps<br>"
        f"{_num(cell['p50_ms'], 2)} / {_num(cell['p99_ms'], 2)} ms"
    )
    if cell.get("saturated"):
        text += " †"
    if cell["error_count"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(cell["errors"].items()))
        text += f"<br>**{cell['error_count']} errors** ({kinds})"
    return text


def _systems(results: dict[str, Any]) -> list[str]:
    present = {_key(c) for c in results["cells"]}
    return [s for s in SYSTEM_LABELS if s in present]


def _scenario_section(results: dict[str, Any], scenario: dict[str, Any]) -> list[str]:
    cells = _cells(results, scenario["name"])
    systems = [s for s in _systems(results) if any(k[0] == s for k in cells)]
    lines = [f"### {scenario['title']}", ""]
    probes = results.get("probes", {}).get(scenario["name"], {})
    missing = [
        f"{SYSTEM_LABELS[s]}: {p['status']} ({p.get('detail', '')})"
        for s, p in probes.items()
        if not p["ok"]
    ]
    if missing:
        lines += ["Not timed — " + "; ".join(missing), ""]
    if not systems:
        return lines
    lines.append("| concurrency | " + " | ".join(SYSTEM_LABELS[s] for s in systems) + " |")
    lines.append("|---:|" + "---|" * len(systems))
    for c in results["run"]["concurrencies"]:
        row = [_cell_text(cells.get((s, c))) for s in systems]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines.append("")
    return lines


CPU_PARTS = ("gateway", "envoy", "baseline", "postgres", "load generator")


def _cpu_section(results: dict[str, Any], concurrency: int = 8) -> list[str]:
    """CPU milliseconds per successful request, by process, at one concurrency."""
    rows = []
    for scenario in results["run"]["scenarios"]:
        cells = _cells(results, scenario["name"])
        for system in SYSTEM_LABELS:
            cell = cells.get((system, concurrency))
            if cell is None or not cell["ok"] or "cpu_s" not in cell:
                continue
            cpu = cell["cpu_s"]
            per = {k: 1000 * cpu.get(k, 0.0) / cell["ok"] for k in CPU_PARTS}
            busy = sum(cpu.get(k, 0.0) for k in CPU_PARTS) / cell["duration_s"]
            rows.append(
                f"| {scenario['title']} | {SYSTEM_LABELS[system]} | "
                f"{_num(cell['throughput_rps'])} | "
                + " | ".join(_num(per[k], 2) if per[k] >= 0.005 else "·" for k in CPU_PARTS)
                + f" | {_num(sum(per.values()), 2)} | {busy:.2f} |"
            )
    if not rows:
        return []
    return [
        f"### Where the CPU goes (c={concurrency})",
        "",
        "CPU milliseconds per successful request, by process, from the processes' own "
        "CPU times (PostgreSQL: the postmaster and every backend, including those a "
        "request opened and closed; load generator: wrk, or the Python client process, "
        'whose interpreter start-up is included). "Cores busy" is the CPU time all of '
        "them used per second of the run, out of the machine's 2.",
        "",
        "| scenario | system | rps | gateway | Envoy | Flask | PostgreSQL | load generator "
        "| all | cores busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def _floor_section(results: dict[str, Any]) -> list[str]:
    """The bare transport next to the gateway's overhead at c=1, scenario by scenario."""
    floor = results.get("floor")
    if not floor:
        return []
    lines = [
        "### The transport floor (c=1)",
        "",
        "`bench/floor.py`: a bare gRPC server built as the gateway's (grpcio's synchronous "
        "server, same thread pool and options) whose Health answers canned bytes, measured "
        "with the same clients (grpc.aio natively; wrk through an Envoy rendered by the same "
        "sidecar code). It does no work at all, so its p50 is what the transport alone adds "
        "to a call; the gateway's own work is its overhead over the limit minus this floor. "
        "It is measured before and after the matrix; the lower p50 is used, which puts "
        "any doubt on the gateway's side.",
        "",
        "| transport | floor p50 | floor p99 | errors |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("grpc", "gRPC (grpc.aio client)"), ("rest", "REST through Envoy (wrk)")):
        cell = floor.get(key)
        if cell:
            lines.append(
                f"| {label} | {_num(cell['p50_ms'], 2)} ms | {_num(cell['p99_ms'], 2)} ms "
                f"| {cell['error_count']} |"
            )
    rows = []
    for scenario in targets.OVERHEAD_SCENARIOS:
        parts = []
        for key in ("gateway/grpc", "gateway/rest"):
            values = targets.overhead_ms(results, scenario, key)
            base = targets.transport_floor_ms(results, key)
            if not values or base is None:
                parts.append("—")
                continue
            total = statistics.median(values)
            parts.append(f"{total:+.2f} = {base:.2f} + {total - base:+.2f}")
        rows.append(f"| {scenario} | " + " | ".join(parts) + " |")
    lines += [
        "",
        "Overhead over the limit at c=1 (median over the rounds) = transport floor + the "
        "gateway's own work, in ms:",
        "",
        "| scenario | gRPC | REST |",
        "|---|---:|---:|",
        *rows,
        "",
    ]
    return lines


def _repeats_section(results: dict[str, Any]) -> list[str]:
    """Every round of the cells the targets read, so a reader sees the spread."""
    repeats = results.get("repeats")
    if not repeats:
        return []
    seen: dict[tuple[str, str, int, str | None], None] = {}
    for cell in repeats:
        key = f"{cell['system']}/{cell['transport']}"
        tool = "hey" if cell.get("tool") == "hey" else None
        seen[(cell["scenario"], key, cell["concurrency"], tool)] = None
    n = 1 + max(cell["round"] for cell in repeats)
    lines = [
        "### The targets' cells, round by round",
        "",
        "Round 0 is the matrix above; the others ran after it, with "
        f"{repeats[0]['duration_s']:.0f}-second windows, the systems of each comparison "
        "back to back. Cells read `rps, p50 ms`, and for the gateway also its CPU per answer "
        "in ms. REST is loaded with wrk, except in the rows marked hey, whose rounds 1 to "
        f"{targets.RATIO_ROUNDS} are rounds of their own.",
        "",
        "| scenario | system | c | " + " | ".join(f"round {r}" for r in range(n)) + " |",
        "|---|---|---:|" + "---:|" * n,
    ]
    for scenario, key, c, tool in seen:
        by_round = targets.rounds(results, scenario, key, c, tool)
        cells = []
        for r in range(n):
            cell = by_round.get(r)
            if cell is None or not cell["ok"]:
                cells.append("—")
                continue
            text = f"{_num(cell['throughput_rps'])}, {_num(cell['p50_ms'], 2)}"
            cpu = targets.gateway_cpu_ms(cell) if cell["system"] == "gateway" else None
            cells.append(text + (f", {cpu:.2f}" if cpu is not None else ""))
        label = SYSTEM_LABELS.get(key, key) + (f" ({tool})" if tool else "")
        lines.append(f"| {scenario} | {label} | {c} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _median_of(cells: Iterable[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> str:
    values = [value(cell) for cell in cells if cell["ok"]]
    return _num(statistics.median(values), 2) if values else "–"


def _gateway_cpu_ms(cell: dict[str, Any]) -> float:
    return float(1000 * cell["cpu_s"].get("gateway", 0.0) / cell["ok"])


AUTH_VARIANT_LABELS = {
    **targets.AUTH_JUDGED_VARIANTS,
    "carried": "JWT sent, no policy: carriage only",
}


def _auth_row(results: dict[str, Any], scenario: str, transport: str, variant: str) -> str:
    def cells(c: int, which: str) -> list[dict[str, Any]]:
        by_round = targets.auth_rounds(results, scenario, transport, c, which, paired_with=variant)
        return list(by_round.values())

    def spread(values: list[float], show: Callable[[float], str]) -> str:
        if not values:
            return "–"
        if len(values) == 1:
            return show(values[0])
        return f"{show(statistics.median(values))} ({show(min(values))} … {show(max(values))})"

    added = targets.auth_p50_added_ms(results, scenario, transport, variant)
    change = targets.auth_throughput_change(results, scenario, transport, variant)
    p50 = [_median_of(cells(1, w), lambda cell: cell["p50_ms"]) for w in ("off", variant)]
    row = (
        f"| {targets.AUTH_TRANSPORT_LABELS[transport]} | {AUTH_VARIANT_LABELS[variant]} | "
        f"{p50[0]} → {p50[1]} ms | {spread(added, lambda ms: f'{ms:+.3f}')} ms |"
    )
    if variant not in targets.AUTH_JUDGED_VARIANTS:
        return row + " – | – | – |"  # measured at c=1 only
    rps = [_median_of(cells(8, w), lambda cell: cell["throughput_rps"]) for w in ("off", variant)]
    cpu = [_median_of(cells(8, w), _gateway_cpu_ms) for w in ("off", variant)]
    return row + (
        f" {rps[0]} → {rps[1]} | {spread(change, lambda x: f'{x:+.1%}')} | {cpu[0]} → {cpu[1]} ms |"
    )


def _auth_section(results: dict[str, Any]) -> list[str]:
    """Policy off against on, cell by cell (bench/auth.py), with the rounds' spread."""
    auth = results.get("auth")
    if not auth:
        return []
    refused = ", ".join(f"{k}: {v}" for k, v in auth.get("refused_without_credentials", {}).items())
    errors = sum(cell["error_count"] for cell in auth["cells"])
    lines = [
        "### Authentication's cost: policy off vs on (issue 11)",
        "",
        '`make bench BENCH_ARGS="--only auth"` (that is, `python -m bench --only auth`; also '
        "part of every full run, `make bench`). Two gateways with the "
        "same settings run side by side, each behind its own Envoy: one without a policy "
        "(every call anonymous), one with `AUTH_POLICY_FILE` naming one principal that may "
        "call everything, reached by an API key (`x-api-key`) or by an RS256 bearer JWT "
        "checked against a JWKS file. The probe verifies the token once, so every timed call "
        "is the verifier's cached case, as for a repeat caller. Before any timing the gateway "
        f"with the policy refused a call without credentials ({refused}). "
        + (
            "Each c=1 round, with its c=8 rounds, has a fresh pair of gateways, started "
            "in turns, so where one process landed is not read as the policy's cost. "
            if auth.get("restarts")
            else ""
        )
        + f"{auth['rounds']} rounds at c=1 and "
        f"{auth.get('throughput_rounds', auth['rounds'])} at c=8. At c=1 one client "
        "(`bench/alternate.py`: grpc.aio for gRPC, http.client with kept-alive connections "
        "for REST) sends one request at a time to the gateway without a policy and the "
        "one with it in turn, one credential at a time, so a burst of other work on the "
        "machine falls on both alike; it runs "
        "for a cell's time per gateway. Its p50s are higher than the matrix's (a Python "
        "client for REST, and each gateway idles while the other answers); only their "
        "difference is judged. At c=8 (the usual load "
        f"generators, {auth['duration_s']}-second cells) the variants run back to back, in "
        "an order that rotates every round. "
        '"Added p50" and "throughput change" are the median over rounds of on against '
        "off within the same round, with the lowest and highest round in brackets; the "
        "other columns are medians over rounds. Gateway CPU is the gateway process's CPU "
        f"time per successful call. Errors in all these cells: {errors}.",
        "",
    ]
    cost = auth.get("in_process_us")
    if cost:
        lines += [
            "In process, without gRPC (`bench.auth.in_process_us`: a stand-in context, median "
            "of 5 runs of 20,000 calls), `Authenticator.authorize` takes "
            f"{cost['off']:.1f} µs a call with no policy, {cost['api_key']:.1f} µs with the "
            f"API key and {cost['jwt']:.1f} µs with the cached JWT."
            + (
                ' The rows "carriage only" (c=1, not judged) send the JWT to the gateway '
                "without a policy, which ignores it, against the same gateway sent nothing: "
                "what carrying the credential costs the client, Envoy and gRPC before any check."
                if any(cell["variant"] == "carried" for cell in auth["cells"])
                else ""
            ),
            "",
        ]
    titles = auth.get("titles", {})
    for scenario in auth["scenarios"]:
        lines += [
            f"**{titles.get(scenario, scenario)}**",
            "",
            "| transport | credential | p50 at c=1, off → on | added p50 | rps at c=8, off → on "
            "| throughput change | gateway CPU per call at c=8, off → on |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            _auth_row(results, scenario, transport, variant)
            for transport in targets.AUTH_TRANSPORT_LABELS
            for variant in AUTH_VARIANT_LABELS
            if variant in targets.AUTH_JUDGED_VARIANTS
            or targets.auth_rounds(results, scenario, transport, 1, variant)
        ]
        lines.append("")
    return lines


def _metrics_cells(
    results: dict[str, Any], scenario: str, transport: str, c: int, which: str
) -> list[dict[str, Any]]:
    by_round = targets.ab_rounds(results, "metrics", scenario, transport, c, which, "on")
    return list(by_round.values())


def _metrics_section(results: dict[str, Any]) -> list[str]:
    """Metrics off against on (bench/metrics.py), with the rounds' spread."""
    section = results.get("metrics")
    if not section:
        return []
    errors = sum(cell["error_count"] for cell in section["cells"])
    lines = [
        "### What the metrics cost a call (issue 14)",
        "",
        '`make bench BENCH_ARGS="--only metrics"` (also part of every full run). Two gateways '
        "with the same settings run side by side, each behind its own Envoy: one with "
        "`METRICS_PORT=0`, one serving `/metrics` as every gateway does by default (before "
        f"any timing it had counted {section.get('probe_calls_counted', 0):g} GetData calls "
        f"of the probes; {section.get('calls_counted', 0):g} at the end). "
        f"{section['rounds']} rounds at c=1 and {section['throughput_rounds']} at c=8, run "
        "as the auth comparison's (`bench/ab.py`): at c=1 one client alternates its requests "
        "between the two gateways, at c=8 each runs alone, in an order that rotates every "
        'round. "Added p50" and "throughput change" are the median over rounds of on '
        "against off within the same round, with the lowest and highest round in brackets. "
        "Tracing is off in both (no `OTEL_*`). "
        f"Errors in all these cells: {errors}.",
        "",
        "| transport | p50 at c=1, off → on | added p50 | rps at c=8, off → on "
        "| throughput change | gateway CPU per call at c=8, off → on |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def spread(values: list[float], show: Callable[[float], str]) -> str:
        if not values:
            return "–"
        return f"{show(statistics.median(values))} ({show(min(values))} … {show(max(values))})"

    for scenario in section["scenarios"]:
        for transport, label in targets.AUTH_TRANSPORT_LABELS.items():
            cells = functools.partial(_metrics_cells, results, scenario, transport)
            if not cells(8, "on"):
                continue
            added = targets.ab_p50_added_ms(results, "metrics", scenario, transport, "on")
            change = targets.ab_throughput_change(results, "metrics", scenario, transport, "on")
            p50 = [_median_of(cells(1, w), lambda cell: cell["p50_ms"]) for w in ("off", "on")]
            rps = [
                _median_of(cells(8, w), lambda cell: cell["throughput_rps"]) for w in ("off", "on")
            ]
            cpu = [_median_of(cells(8, w), _gateway_cpu_ms) for w in ("off", "on")]
            lines.append(
                f"| {label} GetData | {p50[0]} → {p50[1]} ms | "
                f"{spread(added, lambda ms: f'{ms:+.3f}')} ms | {rps[0]} → {rps[1]} | "
                f"{spread(change, lambda x: f'{x:+.1%}')} | {cpu[0]} → {cpu[1]} ms |"
            )
    return [*lines, ""]


PROCESS_TRANSPORTS = {"rest": "REST (Envoy)", "grpc": "gRPC (direct)"}
PART_LABELS = {
    "gateway": "gateway",
    "envoy": "Envoy",
    "postgres": "PostgreSQL",
    "load generator": "load generator",
}


def _spread_text(values: list[float], show: Callable[[float], str]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return show(values[0])
    middle = statistics.median(values)
    return f"{show(middle)} ({show(min(values))} … {show(max(values))})"


def _processes_row(results: dict[str, Any], transport: str, c: int, n: int) -> str | None:
    by_round = scaling.cells(results, transport, c, n)
    if not by_round:
        return None
    answered = [cell for cell in by_round.values() if cell["ok"]]
    errors = sum(cell["error_count"] for cell in by_round.values())
    rps = _spread_text([cell["throughput_rps"] for cell in by_round.values()], _num)
    ratio = _spread_text(scaling.speedup(results, transport, c, n), lambda x: f"{x:.2f}×")
    latency = (
        f"{_median_of(answered, lambda cell: cell['p50_ms'])} / "
        f"{_median_of(answered, lambda cell: cell['p99_ms'])}"
    )
    per_call = [scaling.median_per_call_ms(answered, part) for part in PART_LABELS]
    busy = [
        cell["cpu_s"]["gateway"] / cell["duration_s"]
        for cell in answered
        if "gateway" in cell.get("cpu_s", {})
    ]
    return (
        f"| {PROCESS_TRANSPORTS[transport]} | {c} | {n} | {rps} | "
        + (ratio if n != 1 else "–")
        + f" | {latency} | {errors} | "
        + " | ".join(_num(v, 2) for v in per_call)
        + f" | {_num(sum(v or 0.0 for v in per_call), 2)} | "
        + (f"{statistics.median(busy):.2f}" if busy else "–")
        + " |"
    )


def _projection_rows(results: dict[str, Any], c: int, processes: int) -> list[str]:
    rows = []
    for transport, label in PROCESS_TRANSPORTS.items():
        cost = scaling.call_cost(results, transport, c, processes)
        alone = scaling.call_cost(results, transport, c, 1)  # one process's own CPU per call
        if cost is None:
            continue
        for cores in scaling.PROJECTED_CORES:
            # Envoy with one worker per core; 1 process, then one per core.
            one = "–"
            if alone is not None:
                single = scaling.project(alone, scaling.Host(cores, 1, cores, False))
                one = f"{_num(single.rps)} ({single.limit})"
            apart = scaling.project(cost, scaling.Host(cores, cores, cores, False))
            row = (
                f"| {label} | {cores} | {one} | {_num(apart.rps)} ({apart.limit}) | "
                f"{apart.cores_busy['gateway']:.1f} / {apart.cores_busy['envoy']:.1f} | "
            )
            if cost.postgres_ms is None:
                rows.append(row + "not measured | – |")
                continue
            shared = scaling.project(cost, scaling.Host(cores, cores, cores, True))
            rows.append(
                row + f"{apart.cores_busy['postgres']:.1f} | {_num(shared.rps)} ({shared.limit}) |"
            )
    return rows


def _projection_inputs(results: dict[str, Any], c: int, processes: int) -> list[str]:
    comparison = results["processes"]
    lines = []
    for transport, label in PROCESS_TRANSPORTS.items():
        cost = scaling.call_cost(results, transport, c, processes)
        if cost is None:
            continue
        postgres = "not measured" if cost.postgres_ms is None else f"{cost.postgres_ms:.2f} ms"
        alone = scaling.call_cost(results, transport, c, 1)
        text = (
            f"- {label}: gateway {cost.gateway_ms:.2f} ms"
            + (f" (one process alone: {alone.gateway_ms:.2f} ms)" if alone else "")
            + f", Envoy {cost.envoy_ms:.2f} ms, "
            f"PostgreSQL {postgres} (load generator {cost.load_generator_ms:.2f} ms, off the "
            "host in the projection)."
        )
        calibrated = scaling.calibration(results, transport, c, processes)
        if calibrated is not None:
            modelled, measured = calibrated
            text += (
                f" On this machine ({comparison['machine']['cores_available']} cores, "
                f"{processes} processes, Envoy with {comparison['envoy_workers']} workers, "
                f"everything including the load generator on it) the model gives "
                f"{_num(modelled)} rps; the run measured {_num(measured)} "
                f"({measured / modelled:.0%} of it)."
            )
        workers = comparison["envoy_workers"]
        above = scaling.envoy_binds_above(cost, workers, postgres_on_host=False)
        if above is not None and transport == "rest":  # gRPC here bypasses Envoy
            text += (
                f" With {workers} workers, as here, Envoy alone would cap it at "
                f"{_num(workers * 1000 / cost.envoy_ms)} rps, the rate the host's cores "
                f"reach at {above:.1f} cores (PostgreSQL elsewhere)."
            )
        lines.append(text)
    return lines


def _processes_section(results: dict[str, Any]) -> list[str]:
    """One gateway process against two (bench/processes.py), and the projection."""
    comparison = results.get("processes")
    if not comparison:
        return []
    machine = comparison["machine"]
    errors = sum(cell["error_count"] for cell in comparison["cells"])
    split = comparison.get("gateway_cpu_s_by_process", {})
    shares = {
        n: " / ".join(f"{s / sum(seconds):.0%}" for s in seconds)
        for n, seconds in split.items()
        if len(seconds) > 1 and sum(seconds)
    }
    c = max(comparison["concurrencies"])
    n = max(comparison["process_counts"])
    lines = [
        "### One gateway process against two (issue 12)",
        "",
        '`make bench BENCH_ARGS="--only processes"` (that is, `python -m bench --only '
        "processes`; also part of every full run). Two stacks with the suite's gateway settings "
        "and the same database run side by side: one gateway process behind an Envoy, and two "
        "processes (each its own port and pool) behind an Envoy of their own with both in one "
        "round-robin cluster. REST goes through each stack's Envoy; gRPC goes straight to the "
        "gateway, as in the matrix, with the load generator spreading its calls round-robin "
        "over the processes' ports, so its rows have no Envoy share (a gRPC caller reaching "
        "the processes through Envoy's one port would pay Envoy's proxying: not measured "
        "here). "
        f"{comparison['title']}, {comparison['rounds']} rounds of "
        f"{comparison['duration_s']}-second cells, the two stacks back to back in an order "
        "that alternates every round. Before any timing each process answered the probe and "
        "Envoy had every endpoint healthy"
        + (
            "; over the whole comparison the two processes took "
            + "; ".join(shares.values())
            + " of their gateway's CPU"
            if shares
            else ""
        )
        + f". Machine: {machine['cores']} cores ({machine['cores_available']} available to the "
        f"bench), load average {_loads(machine.get('load_average_at_start'))} at the start and "
        f"{_loads(machine.get('load_average_at_end'))} at the end; Envoy ran "
        f"{comparison['envoy_workers']} workers. Errors in all these cells: {errors}.",
        "",
        'Medians over rounds, with the lowest and highest round in brackets; "2 vs 1" pairs '
        "each round's two stacks. CPU is milliseconds per successful call, by part (the "
        "gateway's processes summed); \"gateway cores\" is the gateway's CPU seconds per "
        "second of the cell.",
        "",
        "| transport | c | processes | rps | 2 vs 1 | p50 / p99 ms | errors | gateway | Envoy "
        "| PostgreSQL | load generator | all | gateway cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for transport in PROCESS_TRANSPORTS:
        for conc in comparison["concurrencies"]:
            for count in comparison["process_counts"]:
                row = _processes_row(results, transport, conc, count)
                if row is not None:
                    lines.append(row)
    rows = _projection_rows(results, c, n)
    if not rows:
        return [*lines, ""]
    lines += [
        "",
        "#### Projection for 4, 8 and 16 cores",
        "",
        "Computed from the CPU each part spent per call with "
        f'{n} processes at c={c}, medians over the rounds (the "1 process" column from the '
        "single process's own):",
        "",
        *_projection_inputs(results, c, n),
        "",
        "The model: a host of C cores serves at most C ÷ the CPU one call costs the parts "
        "running on it. The load generator is off the host (callers are Lambdas and clients "
        "elsewhere); PostgreSQL is either a server of its own (RDS: then the table says how "
        "many cores it needs at that rate) or on the same host. Envoy runs one worker per "
        "core. Two more ceilings: a gateway process runs Python on one core at a time, so N "
        "processes serve at most N ÷ the gateway's CPU per call (a simplification both ways: "
        "gRPC's and libpq's threads run outside the GIL, while contention for it keeps a "
        'process below a full core; "gateway cores" above shows where one process got), and '
        "Envoy's workers at most their number ÷ Envoy's CPU per call. The lowest ceiling is "
        "the rate; it is named in brackets. The "
        "model assumes the CPU per call stays what it is here: contention that grows with "
        "cores (PostgreSQL's locks, memory bandwidth), the network between hosts and a "
        "closed loop's idle time are left out, so each figure is a ceiling; the calibration "
        "above says how close this machine came to its own.",
        "",
        "| transport | host cores | 1 process | one process per core, PostgreSQL elsewhere "
        "| cores busy there: gateway / Envoy | PostgreSQL's cores at that rate "
        "| one process per core, PostgreSQL on the host |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    return lines


def _large_query_section(results: dict[str, Any]) -> list[str]:
    large = results.get("large_query")
    if not large:
        return []
    lines = [
        f"### ExecuteQuery returning {large['rows']:,} rows (`{large['query']}`)",
        "",
        "One request at a time. Peak RSS is the server process's VmHWM (reset before each "
        "request through `/proc/<pid>/clear_refs`); for the baseline, the largest of its "
        "4 workers.",
        "",
        "| system | median time | answer size | peak RSS | RSS growth | rows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in SYSTEM_LABELS.items():
        entry = large.get(key)
        if not entry:
            continue
        runs = [r for r in entry["runs"] if r["ok"]]
        first = runs[0] if runs else entry["runs"][0]
        size = first.get("bytes")
        lines.append(
            f"| {label} | {_num(entry.get('median_s'), 3)} s | "
            f"{_num(size / 2**20 if size else None)} MiB | "
            f"{_num(entry.get('max_peak_rss_mib'))} MiB | "
            f"{_num(entry.get('max_rss_growth_mib'))} MiB | {first.get('rows') or '–'} |"
        )
    default = results.get("startup", {}).get("gateway", {}).get("default_limits_large_query")
    if default and default.get("runs"):
        run = default["runs"][0]
        lines += [
            "",
            f"With the default limits (`MAX_RESULT_ROWS` = 10,000) the same request answers "
            f"{run['status']} with row_count {run['rows']} and truncated={run['truncated']} "
            f"in {_num(run['seconds'], 3)} s (the bench's own gateway runs with "
            f"{_overrides(results)} so that this scenario measures all the rows).",
        ]
    return [*lines, ""]


def _overrides(results: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in results["run"]["gateway_overrides"].items())


def _streaming_section(results: dict[str, Any]) -> list[str]:
    if "streaming" not in results:
        return []  # an auth-only run
    stream = results["streaming"]
    lines = ["### StreamQuery: 10^6 rows", ""]
    if not stream.get("available"):
        return [*lines, f"Not measured: {stream.get('note', '')}", ""]
    lines += [
        f"`{stream['query']}` streamed to the end, one request at a time: gRPC straight to "
        "the gateway, REST as newline-delimited JSON through Envoy, and the limit reading "
        "the same server-side cursor in batches of the same size. RSS growth is the peak "
        "RSS during the stream over the RSS before it.",
        "",
        "| system | time | rows | messages | bytes | gateway RSS growth | Envoy RSS growth |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in SYSTEM_LABELS.items():
        entry = stream.get(key)
        if entry is None:
            continue
        if "error" in entry:
            lines.append(f"| {label} | failed: {entry['error']} | | | | | |")
            continue
        size = entry.get("bytes")
        lines.append(
            f"| {label} | {_num(entry['seconds'], 2)} s | {entry['rows']:,} | "
            f"{entry.get('messages', '–')} | {_num(size / 2**20 if size else None)} MiB | "
            f"{_num(entry.get('rss_growth_mib'))} MiB | "
            f"{_num(entry.get('envoy_rss_growth_mib'))} MiB |"
        )
    return [*lines, ""]


def _startup_section(results: dict[str, Any]) -> list[str]:
    startup = results.get("startup")
    if not startup:
        return []
    lines = [
        "### Start-up to SERVING, database already running",
        "",
        "Gateway: from spawning `python -m datamorph_gateway` (with `DATABASE_URL`) to "
        "`grpc.health.v1` answering SERVING. Baseline: from spawning gunicorn to the "
        "first 200 from `/health`.",
        "",
        "| system | runs | median | max |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("gateway", "Gateway"), ("baseline", "Flask baseline (gunicorn, 4)")):
        entry = startup.get(key)
        if entry:
            lines.append(
                f"| {label} | {len(entry['runs_s'])} | {_num(entry['median_s'], 2)} s | "
                f"{_num(entry['max_s'], 2)} s |"
            )
    return [*lines, ""]


def _loads(values: list[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "unknown"


def _machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    run = results["run"]
    dataset = results["dataset"]
    db = (
        "an external PostgreSQL (`DATABASE_URL`)"
        if dataset["external_database"]
        else ("embedded PostgreSQL on the same machine")
    )
    return [
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; "
        f"Python {m['python']}, PostgreSQL {m['postgresql']} ({db}), Envoy {m['envoy']}, "
        f"{m['wrk']}"
        + (f", hey {m['hey']}" if m.get("hey") else "")
        + f", grpcio {m['grpcio']}, Flask {m['flask']}, gunicorn {m['gunicorn']}.",
        f"- Commit {m['git_commit']}, started {run['started_at']}, "
        f"{run['seconds']:.0f} s in all. Load average (1, 5, 15 min) at the start "
        f"{_loads(m.get('load_average_at_start'))}, at the end "
        f"{_loads(run.get('load_average_at_end'))}: other work on the machine shows here.",
        f"- Each cell: a closed loop of *c* callers for {run['cell_duration_s']} s "
        f"(capped at {run['max_requests_per_cell']:,} requests; a cell that completed fewer "
        f"than 2 requests per caller is rerun with a longer window), after one probe "
        f"request that must answer correctly. Throughput counts successful answers only; "
        f"errors are listed in the cell. Latency cells read `p50 / p99`; † marks a cell "
        f"that answered fewer requests than it had callers, whose latencies are therefore "
        f"a lower bound. Between cells the suite waits until the system answers health "
        f"checks quickly and PostgreSQL has no query left running, so no cell pays for "
        f"the previous one's queue.",
        "- Everything (PostgreSQL, gateway, Envoy, baseline, load generator) shares the 2 "
        "cores, so the load generator's own CPU is part of every number.",
        *(
            [
                "- `--policy`: the suite's gateways ran with an auth policy and every call to "
                "them carried an API key, so every number and target above includes "
                "authentication."
            ]
            if run.get("policy")
            else []
        ),
    ]


def write(results: dict[str, Any], results_path: Path, docs_path: Path) -> None:
    """Render the page and its plots next to it (``<docs>/benchmarks/*.png``)."""
    from bench import plots  # matplotlib is imported only to draw

    image_dir = docs_path.parent / "benchmarks"
    image_dir.mkdir(parents=True, exist_ok=True)
    images = plots.draw(results, image_dir)
    rel_results = _relative(results_path, docs_path.parent)
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench` from [`{results_path.name}`]({rel_results}); "
        "do not edit by hand (`python -m bench --report FILE` re-renders it).",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench                      # installs bench/requirements.txt, wrk, hey; runs:",
        "python -m bench                 # the full suite, about 20 minutes on 2 cores",
        "python -m bench --quick         # a smoke test, about 4 minutes",
        "python -m bench --with-1e7      # also a 10^7-row table (about 1 more minute)",
        "python -m bench --only auth     # only the auth comparison, policy off vs on (~7 min)",
        "python -m bench.auth_split --transport grpc --credential api_key",
        "                                # auth's c=1 cost split: pairing bias, carriage,"
        " check (~2 min)",
        "python -m bench --only processes # one gateway process against two, and the projection",
        "python -m bench --policy        # the whole suite with an auth policy on (API key)",
        "DATABASE_URL=postgresql://... python -m bench   # against your own PostgreSQL",
        "python -m bench.profile --scenario get_data_2e4 --transport rest --concurrency 8 --gil",
        "                                # py-spy profile of the gateway under one cell's load",
        "python -m bench.designs         # server designs for one database call (sync, grpc.aio)",
        "python -m bench.schemas         # a warm GetSchemas of 50 tables, part by part,"
        " in process",
        "python -m bench.schemas --against OTHER/server/src",
        "                                # that GetSchemas served side by side with another"
        " checkout's",
        "```",
        "",
        "Systems: the gateway through REST (Envoy's transcoder) and native gRPC; the "
        "Flask gateway rebuilt from its design (`bench/baseline`: a new connection per "
        "request, three catalog queries per table, `ORDER BY RANDOM()`); and the limit, "
        "the gateway's own SQL issued directly over pooled psycopg2 connections "
        "(`bench/limit.py`).",
        "",
        *_machine_lines(results),
        "",
        "## Targets (issue 5; authentication's cost: issue 11)",
        "",
        "| target | status | measured |",
        "|---|---|---|",
        *(f"| {t.target} | {t.status} | {t.measured} |" for t in targets.evaluate(results)),
        "",
    ]
    if ANALYSIS.exists():
        lines += [
            "## Reading the numbers",
            "",
            ANALYSIS.read_text(encoding="utf-8").strip(),
            "",
        ]
    lines += ["## Results", ""]
    lines += [f"![{title}](benchmarks/{name})" for name, title in images] + [""]
    for scenario in results["run"]["scenarios"]:
        lines += _scenario_section(results, scenario)
    if 8 in results["run"]["concurrencies"]:
        lines += _cpu_section(results, 8)
    lines += _floor_section(results)
    lines += _repeats_section(results)
    lines += _auth_section(results)
    lines += _metrics_section(results)
    lines += _processes_section(results)
    lines += _large_query_section(results)
    lines += _startup_section(results)
    lines += _streaming_section(results)
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    docs_path.write_text("\n".join(_tidy(lines)), encoding="utf-8")


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _tidy(lines: Iterable[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    if out and out[-1] != "":
        out.append("")
    return out
