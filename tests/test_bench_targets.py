"""The benchmark report's judgments: medians over rounds, the floor split (no timing here)."""

from __future__ import annotations

from typing import Any

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
