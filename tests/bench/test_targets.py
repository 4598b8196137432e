"""The benchmark report's judgments: medians over rounds, the floor split (no timing here)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import targets


def _cell(scenario: str, key: str, c: int, *, rps: float = 0.0, p50: float = 1.0) -> dict[str, Any]:
    system, transport = key.split("/")
    return {
        "scenario": scenario,
        "system": system,
        "transport": transport,
        "concurrency": c,
        "throughput_rps": rps,
        "p50_ms": p50,
        "ok": 100,
        "error_count": 0,
    }


def _results(ours_rps: list[float], flask_rps: list[float]) -> dict[str, Any]:
    cells, repeats = [], []
    for c in (8, 64):
        for round_no, (ours, flask) in enumerate(zip(ours_rps, flask_rps, strict=True)):
            pair = [
                _cell("get_data_2e4", "gateway/rest", c, rps=ours),
                _cell("get_data_2e4", "baseline/rest", c, rps=flask),
            ]
            if round_no == 0:
                cells += pair
            else:
                repeats += [{**cell, "round": round_no} for cell in pair]
    return {"cells": cells, "repeats": repeats}


def test_throughput_is_judged_on_the_median_round() -> None:
    # Rounds: 4x, 6x, 5.5x -> median 5.5x: met, although the matrix round alone misses.
    met = targets.evaluate(_results([800, 1200, 1100], [200, 200, 200]))[0]
    assert met.status == targets.MET
    assert "median 5.5× of 3 rounds (4.0–6.0)" in met.measured
    # One lucky round does not carry two poor ones.
    missed = targets.evaluate(_results([800, 1200, 900], [200, 200, 200]))[0]
    assert missed.status == targets.MISSED


def test_overhead_pairs_each_round_with_the_limit_of_the_same_round() -> None:
    results: dict[str, Any] = {"cells": [], "repeats": []}
    for round_no, (ours, limit) in enumerate([(1.5, 0.4), (2.5, 1.6), (1.3, 0.4)]):
        pair = [
            _cell("health", "gateway/grpc", 1, p50=ours),
            _cell("health", "limit/sql", 1, p50=limit),
        ]
        if round_no == 0:
            results["cells"] += pair
        else:
            results["repeats"] += [{**cell, "round": round_no} for cell in pair]
    assert [round(v, 2) for v in targets.overhead_ms(results, "health", "gateway/grpc")] == [
        1.1,
        0.9,
        0.9,
    ]
    results["floor"] = {"grpc": {"p50_ms": 0.5, "error_count": 0}}
    judged = {t.target: t for t in targets.evaluate(results)}
    grpc = next(t for name, t in judged.items() if "(gRPC)" in name)
    assert grpc.status == targets.MET  # median 0.9 ms, though the matrix round says 1.1
    assert "transport floor (a bare gRPC server, same client) is 0.50 ms" in grpc.measured
    assert "own work +0.40 to +0.40 ms" in grpc.measured


def test_a_floor_with_errors_is_not_used() -> None:
    results = {"floor": {"grpc": {"p50_ms": 0.5, "error_count": 3}}}
    assert targets.transport_floor_ms(results, "gateway/grpc") is None


def _auth_results(p50: dict[str, list[float]], rps: dict[str, list[float]]) -> dict[str, Any]:
    """bench/auth.py's cells: GetData over gRPC, one value per round and variant."""
    cells = []
    for variant in ("off", "api_key", "jwt"):
        for round_no, (ms, rate) in enumerate(zip(p50[variant], rps[variant], strict=True), 1):
            cells += [
                {**_cell("get_data_2e4", "gateway/grpc", 1, p50=ms), "variant": variant},
                {**_cell("get_data_2e4", "gateway/grpc", 8, rps=rate), "variant": variant},
            ]
            cells[-1]["round"] = cells[-2]["round"] = round_no
    return {"auth": {"scenarios": ["get_data_2e4"], "cells": cells}}


def test_auth_pairs_each_round_with_the_policy_off_of_the_same_round() -> None:
    # The machine slows down in round 2; "on" moves with it, so the added p50 stays small.
    results = _auth_results(
        p50={"off": [1.00, 1.40, 1.02], "api_key": [1.02, 1.43, 1.03], "jwt": [1.03, 1.44, 1.05]},
        rps={"off": [1000, 700, 1000], "api_key": [980, 690, 990], "jwt": [970, 680, 990]},
    )
    added = targets.auth_p50_added_ms(results, "get_data_2e4", "grpc", "api_key")
    assert [round(v, 3) for v in added] == [0.02, 0.03, 0.01]
    change = targets.auth_throughput_change(results, "get_data_2e4", "grpc", "jwt")
    assert [round(v, 3) for v in change] == [-0.03, -0.029, -0.01]
    judged = {t.target: t for t in targets.evaluate(results)}
    latency = next(
        t for name, t in judged.items() if name.startswith("Authentication") and "p50" in name
    )
    throughput = next(t for name, t in judged.items() if "throughput at c=8" in name)
    assert latency.status == targets.MET
    assert "API key: within in 1 of 1; +0.020 ms" in latency.measured
    assert "bearer JWT: within in 1 of 1; +0.030 ms" in latency.measured
    assert "median of 3 interleaved rounds each" in latency.measured
    assert throughput.status == targets.MET


def test_auth_is_missed_on_the_median_round_or_on_any_error() -> None:
    # JWT: +0.04, +0.08, +0.06 ms -> median 0.06 ms, over the 0.05 ms allowed.
    results = _auth_results(
        p50={"off": [1.0, 1.0, 1.0], "api_key": [1.01, 1.0, 1.0], "jwt": [1.04, 1.08, 1.06]},
        rps={"off": [1000, 1000, 1000], "api_key": [900, 990, 940], "jwt": [1000, 1000, 1000]},
    )
    judged = [t for t in targets.evaluate(results) if t.target.startswith("Authentication")]
    assert [t.status for t in judged] == [targets.MISSED, targets.MISSED]  # -6% for the key
    assert "bearer JWT: within in 0 of 1; +0.060 ms" in judged[0].measured
    results["auth"]["cells"][0]["error_count"] = 2
    results["auth"]["cells"][0]["ok"] = 98
    judged = [t for t in targets.evaluate(results) if t.target.startswith("Authentication")]
    assert "**2 errors**" in judged[-1].measured


def _metrics_results(p50: dict[str, list[float]], rps: dict[str, list[float]]) -> dict[str, Any]:
    """bench/metrics.py's cells: REST GetData, one value per round and variant."""
    cells = []
    for variant in ("off", "on"):
        for round_no, (ms, rate) in enumerate(zip(p50[variant], rps[variant], strict=True), 1):
            cells += [
                {**_cell("get_data_2e4", "gateway/rest", 1, p50=ms), "variant": variant},
                {**_cell("get_data_2e4", "gateway/rest", 8, rps=rate), "variant": variant},
            ]
            cells[-1]["round"] = cells[-2]["round"] = round_no
    return {"metrics": {"scenarios": ["get_data_2e4"], "cells": cells}}


def test_metrics_are_judged_on_rest_get_data_by_the_median_round() -> None:
    # p50 +0.01, +0.05, +0.02 ms -> median +0.02 (met); rps -2%, -6%, -1% -> median -2% (met).
    results = _metrics_results(
        p50={"off": [1.0, 1.0, 1.0], "on": [1.01, 1.05, 1.02]},
        rps={"off": [1000, 1000, 1000], "on": [980, 940, 990]},
    )
    judged = [t for t in targets.evaluate(results) if t.target.startswith("Metrics")]
    assert [t.status for t in judged] == [targets.MET, targets.MET]
    assert judged[0].measured.startswith("+0.020 ms (rounds +0.010 ms … +0.050 ms")
    assert judged[1].measured.startswith("-2.0% (rounds -6.0% … -1.0%")
    # -4% on the median round misses the 3% allowed; any error misses too.
    results = _metrics_results(
        p50={"off": [1.0, 1.0, 1.0], "on": [1.04, 1.0, 1.0]},
        rps={"off": [1000, 1000, 1000], "on": [960, 960, 1000]},
    )
    judged = [t for t in targets.evaluate(results) if t.target.startswith("Metrics")]
    assert [t.status for t in judged] == [targets.MET, targets.MISSED]
    results["metrics"]["cells"][0]["error_count"] = 1
    judged = [t for t in targets.evaluate(results) if t.target.startswith("Metrics")]
    assert judged[0].status == targets.MISSED
    assert "**1 errors**" in judged[0].measured
    assert [t.status for t in targets.evaluate({}) if t.target.startswith("Metrics")] == [
        targets.UNMEASURED,
        targets.UNMEASURED,
    ]


def test_without_the_auth_comparison_its_targets_are_not_measured() -> None:
    judged = [t for t in targets.evaluate({}) if t.target.startswith("Authentication")]
    assert [t.status for t in judged] == [targets.UNMEASURED, targets.UNMEASURED]


def test_carrying_the_header_alone_is_shown_but_not_judged() -> None:
    results = _auth_results(
        p50={"off": [1.0, 1.0, 1.0], "api_key": [1.01, 1.01, 1.01], "jwt": [1.02, 1.02, 1.02]},
        rps={"off": [1000, 1000, 1000], "api_key": [990, 990, 990], "jwt": [990, 990, 990]},
    )
    for round_no in (1, 2, 3):
        results["auth"]["cells"] += [
            {**_cell("get_data_2e4", "gateway/grpc", 1, p50=1.0), "variant": "off"},
            {**_cell("get_data_2e4", "gateway/grpc", 1, p50=1.5), "variant": "carried"},
        ]
        results["auth"]["cells"][-2].update(round=round_no, paired_with="carried")
        results["auth"]["cells"][-1].update(round=round_no)
    added = targets.auth_p50_added_ms(results, "get_data_2e4", "grpc", "carried")
    assert added == [0.5, 0.5, 0.5]
    # The credentials still pair with their own "off" cells, and nothing judges "carried".
    assert targets.auth_p50_added_ms(results, "get_data_2e4", "grpc", "jwt") == pytest.approx(
        [0.02] * 3
    )
    judged = [t for t in targets.evaluate(results) if t.target.startswith("Authentication")]
    assert [t.status for t in judged] == [targets.MET, targets.MET]


def _target(results: dict[str, Any], starts: str) -> targets.Target:
    return next(t for t in targets.evaluate(results) if t.target.startswith(starts))


def _with_hey(results: dict[str, Any], ours_rps: list[float], flask_rps: list[float]) -> None:
    for round_no, (ours, flask) in enumerate(zip(ours_rps, flask_rps, strict=True), 1):
        for key, rps in (("gateway/rest", ours), ("baseline/rest", flask)):
            cell = _cell("get_data_2e4", key, 8, rps=rps)
            results["repeats"].append({**cell, "tool": "hey", "round": round_no})


def test_hey_rounds_are_their_own_and_every_round_of_both_tools_must_reach_5x() -> None:
    results = _results([1100, 1200, 1100], [200, 200, 200])  # wrk: 5.5×, 6×, 5.5×
    for cell in results["cells"] + results["repeats"]:
        cell["tool"] = "wrk"
    _with_hey(results, [1000, 900, 1200], [200, 200, 200])  # hey: 5×, 4.5×, 6×
    both = _target(
        results,
        "REST GetData (10 rows of 2·10^4) throughput ≥ 5× the Flask baseline at c=8 with wrk",
    )
    assert both.status == targets.MISSED
    assert "wrk: 3 of 3 rounds (5.5×, 6.0×, 5.5×), 0 errors" in both.measured
    assert "hey: 2 of 3 rounds (5.0×, 4.5×, 6.0×), 0 errors" in both.measured
    # The hey cells never enter the wrk judgment (issue 5's median stays wrk's).
    assert targets.evaluate(results)[0].measured.startswith(
        "c=8: median 5.5× of 3 rounds (5.5–6.0)"
    )
    results["repeats"] = [c for c in results["repeats"] if c.get("tool") != "hey"]
    _with_hey(results, [1000, 1100, 1200], [200, 200, 200])
    assert (
        _target(
            results,
            "REST GetData (10 rows of 2·10^4) throughput ≥ 5× the Flask baseline at c=8 with wrk",
        ).status
        == targets.MET
    )
    # Without hey's rounds the target is not met: both tools are required.
    results["repeats"] = [c for c in results["repeats"] if c.get("tool") != "hey"]
    only_wrk = _target(
        results,
        "REST GetData (10 rows of 2·10^4) throughput ≥ 5× the Flask baseline at c=8 with wrk",
    )
    assert only_wrk.status == targets.MISSED


def test_gateway_cpu_per_call_must_hold_in_every_round() -> None:
    results = _results([1000, 1000, 1000], [100, 100, 100])
    spent = iter([0.04, 0.045, 0.046])  # s for 100 answers: 0.40, 0.45, 0.46 ms a call
    for cell in results["cells"] + results["repeats"]:
        if cell["system"] == "gateway" and cell["concurrency"] == 8:
            cell["cpu_s"] = {"gateway": next(spent)}
    cpu = _target(results, "Gateway CPU per REST GetData")
    assert cpu.status == targets.MISSED
    assert cpu.measured == "within in 2 of 3 rounds: 0.40 ms, 0.45 ms, 0.46 ms"
    [last] = [
        cell
        for cell in results["repeats"]
        if (cell["system"], cell["concurrency"], cell["round"]) == ("gateway", 8, 2)
    ]
    last["cpu_s"]["gateway"] = 0.044
    assert _target(results, "Gateway CPU per REST GetData").status == targets.MET


@pytest.mark.parametrize(
    ("grpc_ms", "rest_ms", "status"),
    [(1.9, 2.9, targets.MET), (2.1, 2.9, targets.MISSED), (1.9, 3.1, targets.MISSED)],
)
def test_schemas_from_the_cache_have_a_limit_per_transport(
    grpc_ms: float, rest_ms: float, status: str
) -> None:
    results = {
        "cells": [
            _cell("get_schemas_50", "gateway/grpc", 1, p50=grpc_ms),
            _cell("get_schemas_50", "gateway/rest", 1, p50=rest_ms),
        ]
    }
    found = _target(results, "GetSchemas of 50 tables p50 ≤ 2 ms")
    assert (found.status, found.measured) == (status, f"gRPC {grpc_ms} ms; REST {rest_ms} ms")
