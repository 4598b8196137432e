"""Issue 5's targets, issue 11's for authentication's cost, issue 14's for the metrics' and
issue 17's for speed, each judged from a results file: met, missed, or not measured.

The judgments are the report's, never a test's: timings belong in bench/.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MET = "**met**"
MISSED = "**missed**"
UNMEASURED = "not measured"
# Scenarios whose answer is small, so that a gateway's time over the limit is its own
# per-request cost rather than the cost of encoding a big answer.
OVERHEAD_SCENARIOS = (
    "health",
    "get_schemas_1",
    "get_data_1e3",
    "get_data_2e4",
    "get_data_1e5",
    "get_data_1e6",
    "execute_query_small",
)

# Issue 11: what authentication (an API key, or a cached JWT/IAM identity) may add to a call,
# judged on bench/auth.py's interleaved rounds, "on" against the same round's "off".
AUTH_P50_ADDED_LIMIT_MS = 0.05  # at c=1
AUTH_THROUGHPUT_LOSS_LIMIT = 0.05  # at c=8, a fraction of the policy-off throughput
AUTH_JUDGED_VARIANTS = {"api_key": "API key", "jwt": "bearer JWT"}
AUTH_TRANSPORT_LABELS = {"grpc": "gRPC", "rest": "REST"}
# Issue 14: what the Prometheus metrics (on by default) may cost REST GetData, judged on
# bench/metrics.py's interleaved rounds, "on" against the same round's "off".
METRICS_P50_ADDED_LIMIT_MS = 0.03  # at c=1
METRICS_THROUGHPUT_LOSS_LIMIT = 0.03  # at c=8
METRICS_JUDGED = ("get_data_2e4", "rest")
# Issue 17: the gateway's own CPU per REST GetData at c=8, the ratio to the Flask design with
# both load generators in every round, and GetSchemas of 50 tables answered from the cache.
GATEWAY_CPU_LIMIT_MS = 0.45
RATIO_TOOLS = ("wrk", "hey")
RATIO_ROUNDS = 3  # with each tool: the matrix and two repeats for wrk, three rounds for hey
SCHEMAS_50_LIMIT_MS = {"gateway/grpc": 2.0, "gateway/rest": 3.0}


@dataclass(frozen=True)
class Target:
    target: str
    status: str
    measured: str


def _cell(results: dict[str, Any], scenario: str, key: str, c: int) -> dict[str, Any] | None:
    cells: list[dict[str, Any]] = results.get("cells", [])
    for cell in cells:
        if (
            cell["scenario"] == scenario
            and f"{cell['system']}/{cell['transport']}" == key
            and cell["concurrency"] == c
        ):
            return cell
    return None


def p50(results: dict[str, Any], scenario: str, key: str, c: int = 1) -> float | None:
    cell = _cell(results, scenario, key, c)
    return None if cell is None or cell["ok"] == 0 else cell["p50_ms"]


def rounds(
    results: dict[str, Any], scenario: str, key: str, c: int, tool: str | None = None
) -> dict[int, dict[str, Any]]:
    """The matrix's cell (round 0) and its repeats (rounds 1..n), by round.

    The hey cells have rounds of their own: they count only when `tool` is "hey", and then
    only they do.
    """

    def wanted(cell: dict[str, Any]) -> bool:
        made_by = cell.get("tool")
        return made_by == tool if tool is not None else made_by != "hey"

    out: dict[int, dict[str, Any]] = {}
    main = _cell(results, scenario, key, c)
    if main is not None and wanted(main):
        out[0] = main
    for cell in results.get("repeats", []):
        if (
            cell["scenario"] == scenario
            and f"{cell['system']}/{cell['transport']}" == key
            and cell["concurrency"] == c
            and wanted(cell)
        ):
            out[cell["round"]] = cell
    return out


def overhead_ms(results: dict[str, Any], scenario: str, key: str) -> list[float]:
    """p50 over the limit's at c=1, one value per round both were measured in."""
    ours, limit = rounds(results, scenario, key, 1), rounds(results, scenario, "limit/sql", 1)
    return [
        ours[r]["p50_ms"] - limit[r]["p50_ms"]
        for r in sorted(ours.keys() & limit.keys())
        if ours[r]["ok"] and limit[r]["ok"]
    ]


def _spread(values: list[float], unit: str, digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}{unit}"
    return (
        f"median {statistics.median(values):.{digits}f}{unit} of {len(values)} rounds "
        f"({min(values):.{digits}f}–{max(values):.{digits}f})"
    )


def _throughput_ratio(results: dict[str, Any]) -> Target:
    name = (
        "REST GetData (10 rows of 2·10^4) throughput ≥ 5× the Flask baseline "
        "at c=8 and 64, 0 errors"
    )
    parts, ok, seen = [], True, False
    for c in (8, 64):
        ours = rounds(results, "get_data_2e4", "gateway/rest", c)
        theirs = rounds(results, "get_data_2e4", "baseline/rest", c)
        both = [r for r in sorted(ours.keys() & theirs.keys()) if theirs[r]["throughput_rps"]]
        if not both:
            continue
        seen = True
        ratios = [ours[r]["throughput_rps"] / theirs[r]["throughput_rps"] for r in both]
        errors = sum(ours[r]["error_count"] + theirs[r]["error_count"] for r in both)
        ok = ok and statistics.median(ratios) >= 5 and errors == 0
        first = both[0]
        parts.append(
            f"c={c}: {_spread(ratios, '×', 1)}; matrix: "
            f"{ours[first]['throughput_rps']:,.0f} vs {theirs[first]['throughput_rps']:,.0f} rps"
            f", {errors} errors"
        )
    if not seen:
        return Target(name, UNMEASURED, "")
    return Target(name, MET if ok else MISSED, "; ".join(parts))


def _ratio_with_both_tools(results: dict[str, Any]) -> Target:
    name = (
        "REST GetData (10 rows of 2·10^4) throughput ≥ 5× the Flask baseline at c=8 with wrk "
        "and with hey, in every round (issue 17)"
    )
    parts, ok, seen = [], True, 0
    for tool in RATIO_TOOLS:
        ours = rounds(results, "get_data_2e4", "gateway/rest", 8, tool)
        theirs = rounds(results, "get_data_2e4", "baseline/rest", 8, tool)
        both = [r for r in sorted(ours.keys() & theirs.keys()) if theirs[r]["throughput_rps"]]
        if not both:
            continue
        seen += 1
        ratios = [ours[r]["throughput_rps"] / theirs[r]["throughput_rps"] for r in both]
        errors = sum(ours[r]["error_count"] + theirs[r]["error_count"] for r in both)
        within = sum(1 for ratio in ratios if ratio >= 5)
        ok = ok and within == len(ratios) >= RATIO_ROUNDS and errors == 0
        listed = ", ".join(f"{ratio:.1f}×" for ratio in ratios)
        parts.append(f"{tool}: {within} of {len(ratios)} rounds ({listed}), {errors} errors")
    if not seen:
        return Target(name, UNMEASURED, "")
    status = MET if ok and seen == len(RATIO_TOOLS) else MISSED
    return Target(name, status, "; ".join(parts))


def gateway_cpu_ms(cell: dict[str, Any]) -> float | None:
    """The gateway processes' CPU per successful answer in a cell, in ms."""
    spent = cell.get("cpu_s", {}).get("gateway")
    if spent is None or not cell.get("ok"):
        return None
    return float(spent) / int(cell["ok"]) * 1000


def _gateway_cpu(results: dict[str, Any]) -> Target:
    name = (
        f"Gateway CPU per REST GetData (10 rows of 2·10^4) ≤ {GATEWAY_CPU_LIMIT_MS} ms at c=8, "
        "in every round (issue 17)"
    )
    by_round = rounds(results, "get_data_2e4", "gateway/rest", 8)
    values = [v for v in (gateway_cpu_ms(by_round[r]) for r in sorted(by_round)) if v is not None]
    if not values:
        return Target(name, UNMEASURED, "")
    within = sum(1 for v in values if v <= GATEWAY_CPU_LIMIT_MS)
    measured = f"within in {within} of {len(values)} rounds: " + ", ".join(
        f"{v:.2f} ms" for v in values
    )
    return Target(name, MET if within == len(values) else MISSED, measured)


def _schemas_cached(results: dict[str, Any]) -> Target:
    name = "GetSchemas of 50 tables p50 ≤ 2 ms over gRPC and ≤ 3 ms through Envoy (c=1; issue 17)"
    parts, ok, seen = [], True, False
    for key, label in (("gateway/grpc", "gRPC"), ("gateway/rest", "REST")):
        ms = p50(results, "get_schemas_50", key)
        if ms is None:
            continue
        seen = True
        ok = ok and ms <= SCHEMAS_50_LIMIT_MS[key]
        parts.append(f"{label} {ms:.1f} ms")
    return Target(name, (MET if ok else MISSED) if seen else UNMEASURED, "; ".join(parts))


def _flat_sampling(results: dict[str, Any]) -> Target:
    name = "GetData p50 on 10^6 rows within 3× of 10^3 rows (c=1)"
    parts, ok, seen = [], True, False
    for key, label in (("gateway/grpc", "gRPC"), ("gateway/rest", "REST")):
        small = p50(results, "get_data_1e3", key)
        big = p50(results, "get_data_1e6", key)
        if small is None or big is None:
            continue
        seen = True
        ok = ok and big <= 3 * small
        parts.append(f"{label}: {big:.2f} vs {small:.2f} ms = {big / small:.1f}×")
    small = p50(results, "get_data_1e3", "baseline/rest")
    big = p50(results, "get_data_1e6", "baseline/rest")
    if small and big:
        parts.append(f"(Flask: {big:.1f} vs {small:.1f} ms = {big / small:.0f}×)")
    return Target(name, (MET if ok else MISSED) if seen else UNMEASURED, "; ".join(parts))


def _schemas(results: dict[str, Any]) -> Target:
    name = "GetSchemas of 50 tables p50 ≤ 25 ms (c=1)"
    parts, ok, seen = [], True, False
    for key, label in (("gateway/grpc", "gRPC"), ("gateway/rest", "REST")):
        ms = p50(results, "get_schemas_50", key)
        if ms is None:
            continue
        seen = True
        ok = ok and ms <= 25
        parts.append(f"{label} {ms:.1f} ms")
    flask = p50(results, "get_schemas_50", "baseline/rest")
    if flask is not None:
        parts.append(f"(Flask {flask:.0f} ms)")
    return Target(name, (MET if ok else MISSED) if seen else UNMEASURED, "; ".join(parts))


def _overhead(results: dict[str, Any], key: str, limit_ms: float, label: str) -> Target:
    name = f"Gateway p50 overhead over direct psycopg2 ≤ {limit_ms:g} ms at c=1 ({label})"
    overheads: list[tuple[float, str]] = []
    for scenario in OVERHEAD_SCENARIOS:
        values = overhead_ms(results, scenario, key)
        if values:
            overheads.append((statistics.median(values), scenario))
    if not overheads:
        return Target(name, UNMEASURED, "")
    worst, where = max(overheads)
    best, best_where = min(overheads)
    within = sum(1 for o, _ in overheads if o <= limit_ms)
    status = MET if within == len(overheads) else MISSED
    counted = max(len(overhead_ms(results, s, key)) for s in OVERHEAD_SCENARIOS)
    measured = (
        f"within in {within} of {len(overheads)} small-answer scenarios"
        + (f" (median of {counted} rounds each)" if counted > 1 else "")
        + "; "
        f"{best:+.2f} ms ({best_where}) to {worst:+.2f} ms ({where})"
    )
    floor = transport_floor_ms(results, key)
    if floor is not None:
        measured += (
            f"; of which the transport floor (a bare gRPC server, same client) is {floor:.2f} ms"
            f" and the gateway's own work {best - floor:+.2f} to {worst - floor:+.2f} ms"
        )
    return Target(name, status, measured)


def transport_floor_ms(results: dict[str, Any], key: str) -> float | None:
    """p50 of bench/floor.py's canned Health at c=1: a call that does no work at all.

    The gateway's latency is this transport, its own work and the database's time; the
    limit's is the database's time alone, so overhead minus floor is the gateway's work.
    """
    floor = results.get("floor", {}).get(key.split("/")[1], {})
    if not floor.get("p50_ms") or floor.get("error_count"):
        return None
    return float(floor["p50_ms"])


def _stream_target(stream: dict[str, Any]) -> Target:
    name = "10^6 rows through StreamQuery with the gateway's RSS growing ≤ 100 MB"
    if not stream.get("available"):
        return Target(name, UNMEASURED, stream.get("note", ""))
    parts, ok = [], True
    for key, label in (("gateway/grpc", "gRPC"), ("gateway/rest", "REST")):
        entry = stream.get(key)
        if entry is None:
            continue
        if "error" in entry or not entry.get("ok"):
            ok = False
            parts.append(f"{label}: failed ({entry.get('error', 'incomplete stream')})")
            continue
        growth_mb = entry["rss_growth_mib"] * 1.048576
        ok = ok and growth_mb <= 100
        parts.append(
            f"{label}: +{growth_mb:.1f} MB, {entry['rows']:,} rows in {entry['seconds']:.1f} s"
        )
    return Target(name, (MET if ok else MISSED) if parts else UNMEASURED, "; ".join(parts))


def _memory(results: dict[str, Any]) -> list[Target]:
    streamed = _stream_target(results.get("streaming", {}))
    large = results.get("large_query", {})
    default = results.get("startup", {}).get("gateway", {}).get("default_limits_large_query", {})
    name = "A 100k-row ExecuteQuery fits the configured limits or is refused clearly"
    parts = []
    ok = True
    for key, label in (("gateway/grpc", "gRPC"), ("gateway/rest", "REST")):
        entry = large.get(key)
        if entry:
            ok = ok and entry["errors"] == 0
            growth = entry.get("max_rss_growth_mib")
            parts.append(
                f"{label} (MAX_RESULT_ROWS=100000): {entry.get('median_s', 0):.2f} s, "
                f"RSS +{growth:.0f} MiB"
                if growth is not None
                else f"{label}: ok"
            )
    if default.get("runs"):
        run = default["runs"][0]
        ok = ok and run["ok"] and (run["truncated"] or run["rows"] == 100_000)
        parts.append(f"defaults: {run['rows']} rows, truncated={run['truncated']}")
    status = (MET if ok else MISSED) if parts else UNMEASURED
    return [streamed, Target(name, status, "; ".join(parts))]


def _startup(results: dict[str, Any]) -> Target:
    name = "Start-up to SERVING ≤ 1.5 s with an external database"
    ours = results.get("startup", {}).get("gateway")
    if not ours:
        return Target(name, UNMEASURED, "")
    theirs = results["startup"].get("baseline")
    text = f"median {ours['median_s']:.2f} s, max {ours['max_s']:.2f} s"
    if theirs:
        text += f" (Flask/gunicorn: {theirs['median_s']:.2f} s)"
    return Target(name, MET if ours["median_s"] <= 1.5 else MISSED, text)


def ab_rounds(
    results: dict[str, Any],
    section: str,
    scenario: str,
    transport: str,
    c: int,
    variant: str,
    paired_with: str | None = None,
) -> dict[int, dict[str, Any]]:
    """An off/on comparison's cells of one variant (``results[section]``: "auth",
    "metrics"), by round; for "off" cells measured together with another variant (c=1),
    those `paired_with` it."""
    cells: list[dict[str, Any]] = results.get(section, {}).get("cells", [])
    return {
        cell["round"]: cell
        for cell in cells
        if cell["scenario"] == scenario
        and cell["transport"] == transport
        and cell["concurrency"] == c
        and cell["variant"] == variant
        and cell.get("paired_with", paired_with) == paired_with
    }


def auth_rounds(
    results: dict[str, Any],
    scenario: str,
    transport: str,
    c: int,
    variant: str,
    paired_with: str | None = None,
) -> dict[int, dict[str, Any]]:
    """The auth comparison's cells of one variant, by round (``ab_rounds``)."""
    return ab_rounds(results, "auth", scenario, transport, c, variant, paired_with)


def _ab_pairs(
    results: dict[str, Any], section: str, scenario: str, transport: str, c: int, variant: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(off, on) cells of the rounds where both answered."""
    on = ab_rounds(results, section, scenario, transport, c, variant)
    off = ab_rounds(results, section, scenario, transport, c, "off", paired_with=variant)
    return [(off[r], on[r]) for r in sorted(on.keys() & off.keys()) if on[r]["ok"] and off[r]["ok"]]


def ab_p50_added_ms(
    results: dict[str, Any], section: str, scenario: str, transport: str, variant: str
) -> list[float]:
    """p50 with the setting on minus off at c=1, one value per round."""
    return [
        on["p50_ms"] - off["p50_ms"]
        for off, on in _ab_pairs(results, section, scenario, transport, 1, variant)
    ]


def ab_throughput_change(
    results: dict[str, Any], section: str, scenario: str, transport: str, variant: str
) -> list[float]:
    """Throughput with the setting on over off at c=8, minus 1 (-0.03: 3% lost), per round."""
    return [
        on["throughput_rps"] / off["throughput_rps"] - 1
        for off, on in _ab_pairs(results, section, scenario, transport, 8, variant)
        if off["throughput_rps"]
    ]


def auth_p50_added_ms(
    results: dict[str, Any], scenario: str, transport: str, variant: str
) -> list[float]:
    """p50 with the policy on minus off at c=1, one value per round."""
    return ab_p50_added_ms(results, "auth", scenario, transport, variant)


def auth_throughput_change(
    results: dict[str, Any], scenario: str, transport: str, variant: str
) -> list[float]:
    """Throughput with the policy on over off at c=8, minus 1, per round."""
    return ab_throughput_change(results, "auth", scenario, transport, variant)


def _auth_errors(results: dict[str, Any]) -> int:
    return sum(cell["error_count"] for cell in results.get("auth", {}).get("cells", []))


def _auth_target(
    results: dict[str, Any],
    name: str,
    values: Callable[[dict[str, Any], str, str, str], list[float]],
    within: Callable[[float], bool],
    show: Callable[[float], str],
) -> Target:
    """Judge the median over rounds of `values(results, scenario, transport, variant)` for
    every scenario and transport; the range shown runs from the lowest median to the
    highest."""
    auth = results.get("auth")
    if not auth:
        return Target(name, UNMEASURED, "")
    parts, ok, counted = [], True, 0
    for variant, label in AUTH_JUDGED_VARIANTS.items():
        medians: list[tuple[float, str]] = []
        for scenario in auth["scenarios"]:
            for transport, transport_label in AUTH_TRANSPORT_LABELS.items():
                per_round = values(results, scenario, transport, variant)
                if per_round:
                    counted = max(counted, len(per_round))
                    medians.append((statistics.median(per_round), f"{scenario} {transport_label}"))
        if not medians:
            continue
        inside = [m for m in medians if within(m[0])]
        ok = ok and len(inside) == len(medians)
        best, worst = min(medians), max(medians)
        parts.append(
            f"{label}: within in {len(inside)} of {len(medians)}; "
            f"{show(best[0])} ({best[1]}) to {show(worst[0])} ({worst[1]})"
        )
    if not parts:
        return Target(name, UNMEASURED, "")
    errors = _auth_errors(results)
    if errors:
        ok = False
        parts.append(f"**{errors} errors**")
    measured = "; ".join(parts) + f" (median of {counted} interleaved rounds each)"
    return Target(name, MET if ok else MISSED, measured)


def _auth_latency(results: dict[str, Any]) -> Target:
    return _auth_target(
        results,
        f"Authentication (API key; cached JWT) adds ≤ {AUTH_P50_ADDED_LIMIT_MS:g} ms p50 at c=1 "
        "(GetData, ExecuteQuery; gRPC and REST)",
        auth_p50_added_ms,
        lambda ms: ms <= AUTH_P50_ADDED_LIMIT_MS,
        lambda ms: f"{ms:+.3f} ms",
    )


def _auth_throughput(results: dict[str, Any]) -> Target:
    return _auth_target(
        results,
        f"Authentication (API key; cached JWT) costs ≤ {AUTH_THROUGHPUT_LOSS_LIMIT:.0%} "
        "throughput at c=8 (GetData, ExecuteQuery; gRPC and REST)",
        auth_throughput_change,
        lambda change: change >= -AUTH_THROUGHPUT_LOSS_LIMIT,
        lambda change: f"{change:+.1%}",
    )


def _metrics_target(
    results: dict[str, Any],
    name: str,
    values: Callable[[dict[str, Any], str, str, str, str], list[float]],
    within: Callable[[float], bool],
    show: Callable[[float], str],
) -> Target:
    """The median over rounds of `values` for REST GetData, metrics on against off."""
    if not results.get("metrics"):
        return Target(name, UNMEASURED, "")
    scenario, transport = METRICS_JUDGED
    per_round = values(results, "metrics", scenario, transport, "on")
    if not per_round:
        return Target(name, UNMEASURED, "")
    middle = statistics.median(per_round)
    errors = sum(cell["error_count"] for cell in results["metrics"].get("cells", []))
    measured = (
        f"{show(middle)} (rounds {show(min(per_round))} … {show(max(per_round))}; "
        f"median of {len(per_round)} interleaved rounds)"
    )
    if errors:
        measured += f"; **{errors} errors**"
    return Target(name, MET if within(middle) and not errors else MISSED, measured)


def _metrics_latency(results: dict[str, Any]) -> Target:
    return _metrics_target(
        results,
        f"Metrics on add ≤ {METRICS_P50_ADDED_LIMIT_MS:g} ms p50 at c=1 (REST GetData)",
        ab_p50_added_ms,
        lambda ms: ms <= METRICS_P50_ADDED_LIMIT_MS,
        lambda ms: f"{ms:+.3f} ms",
    )


def _metrics_throughput(results: dict[str, Any]) -> Target:
    return _metrics_target(
        results,
        f"Metrics on cost ≤ {METRICS_THROUGHPUT_LOSS_LIMIT:.0%} throughput at c=8 (REST GetData)",
        ab_throughput_change,
        lambda change: change >= -METRICS_THROUGHPUT_LOSS_LIMIT,
        lambda change: f"{change:+.1%}",
    )


def evaluate(results: dict[str, Any]) -> list[Target]:
    """Every target of issue 5, in the issue's order, then issue 11's two, issue 14's and
    issue 17's."""
    return [
        _throughput_ratio(results),
        _flat_sampling(results),
        _schemas(results),
        _overhead(results, "gateway/grpc", 1.0, "gRPC"),
        _overhead(results, "gateway/rest", 2.0, "through Envoy"),
        *_memory(results),
        _startup(results),
        _auth_latency(results),
        _auth_throughput(results),
        _metrics_latency(results),
        _metrics_throughput(results),
        _schemas_cached(results),
        _gateway_cpu(results),
        _ratio_with_both_tools(results),
    ]
