"""The report's PNGs: throughput and p50/p99 per scenario and concurrency, and GetData
latency against table size on log axes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display here or in CI

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.report import SYSTEM_COLORS, SYSTEM_LABELS


def _grid(count: int) -> tuple[Any, list[Axes]]:
    cols = 3
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _by_scenario(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[Any, Any]]]:
    out = []
    for scenario in results["run"]["scenarios"]:
        cells = {
            (f"{c['system']}/{c['transport']}", c["concurrency"]): c
            for c in results["cells"]
            if c["scenario"] == scenario["name"]
        }
        if cells:
            out.append((scenario, cells))
    return out


def _bars(results: dict[str, Any], path: Path, *, latency: bool) -> None:
    groups = _by_scenario(results)
    concurrencies = results["run"]["concurrencies"]
    fig, axes = _grid(len(groups))
    width = 0.8 / len(SYSTEM_LABELS)
    for ax, (scenario, cells) in zip(axes, groups, strict=True):
        for i, system in enumerate(SYSTEM_LABELS):
            xs, heights, tops = [], [], []
            for j, c in enumerate(concurrencies):
                cell = cells.get((system, c))
                if cell is None or not cell["ok"]:
                    continue
                xs.append(j + (i - (len(SYSTEM_LABELS) - 1) / 2) * width)
                heights.append(cell["p50_ms"] if latency else cell["throughput_rps"])
                tops.append(cell["p99_ms"])
            if not xs:
                continue
            ax.bar(xs, heights, width, color=SYSTEM_COLORS[system], label=SYSTEM_LABELS[system])
            if latency:
                ax.scatter(xs, tops, marker="_", s=80, color="black", zorder=3)
        ax.set_title(scenario["title"], fontsize=9)
        ax.set_xticks(range(len(concurrencies)), [f"c={c}" for c in concurrencies])
        ax.set_yscale("log")
        ax.set_ylabel("ms (bar p50, tick p99)" if latency else "requests/s", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    title = "Latency per scenario (log scale)" if latency else "Throughput (log scale)"
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _size_plot(results: dict[str, Any], path: Path) -> bool:
    sized = [s for s in results["run"]["scenarios"] if s["table_rows"]]
    if len(sized) < 2:
        return False
    concurrencies = results["run"]["concurrencies"]
    fig, axes = plt.subplots(
        1, len(concurrencies), figsize=(4.5 * len(concurrencies), 3.6), squeeze=False
    )
    for ax, c in zip(axes[0], concurrencies, strict=True):
        for system in SYSTEM_LABELS:
            points = []
            for scenario in sorted(sized, key=lambda s: s["table_rows"]):
                for cell in results["cells"]:
                    if (
                        cell["scenario"] == scenario["name"]
                        and f"{cell['system']}/{cell['transport']}" == system
                        and cell["concurrency"] == c
                        and cell["ok"]
                    ):
                        points.append((scenario["table_rows"], cell["p50_ms"]))
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs, ys, marker="o", color=SYSTEM_COLORS[system], label=SYSTEM_LABELS[system]
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows in the table")
        ax.set_ylabel("p50 latency, ms")
        ax.set_title(f"GetData, 10 rows, c={c}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def draw(results: dict[str, Any], directory: Path) -> list[tuple[str, str]]:
    """Draw every plot into `directory`; (file name, title) of each, in page order."""
    out = []
    if results.get("cells"):
        _bars(results, directory / "throughput.png", latency=False)
        out.append(("throughput.png", "Throughput per scenario and concurrency"))
        _bars(results, directory / "latency.png", latency=True)
        out.append(("latency.png", "p50 and p99 latency per scenario and concurrency"))
    if _size_plot(results, directory / "getdata-latency-vs-table-size.png"):
        out.append(("getdata-latency-vs-table-size.png", "GetData latency against table size"))
    return out
