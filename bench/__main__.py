"""``python -m bench`` (``make bench``): run the suite, write the results and the report.

A full run writes ``bench/results/<date>.json`` and regenerates ``docs/benchmarks.md``
with its plots; ``--quick`` (a smoke test: fewer scenarios, 1-second cells), ``--only``
and ``--policy`` write both under ``<data-dir>/report`` instead, so they never overwrite
the published numbers. ``--only auth`` runs only the auth comparison (policy off vs on,
``bench/auth.py``), which every full run includes; ``--only metrics`` only the metrics off/on
comparison (``bench/metrics.py``), also in every full run; ``--only processes`` only the comparison
of one gateway process with two (``bench/processes.py``), which every full run includes too.
``--report FILE`` only renders the report from an existing results file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import auth, metrics, processes, report
from bench.rest_load import WrkMissing
from bench.scenarios import scenarios
from bench.stack import StackError
from bench.suite import AUTH, COMPARISONS, METRICS, PROCESSES, Options, Suite

REPO = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer, shorter cells")
    parser.add_argument(
        "--with-1e7", action="store_true", help="also load and sample a 10^7-row table (~1 min)"
    )
    parser.add_argument("--duration", type=int, help="seconds per cell (default 3, quick 1)")
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="request cap per cell (default 200000)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO / ".data" / "bench",
        help="embedded PostgreSQL and run logs (default .data/bench)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=[s.name for s in scenarios(with_1e7=True)] + list(COMPARISONS),
        help=(
            f"run only this scenario, or '{AUTH}': the auth comparison, or '{METRICS}': "
            f"the metrics off/on comparison, or '{PROCESSES}': one gateway process against "
            "two (repeatable)"
        ),
    )
    parser.add_argument(
        "--auth-rounds",
        type=int,
        help=f"interleaved rounds of the auth comparison (default {auth.ROUNDS}, quick 3)",
    )
    parser.add_argument(
        "--metrics-rounds",
        type=int,
        help=f"interleaved rounds of the metrics comparison (default {metrics.ROUNDS}, quick 3)",
    )
    parser.add_argument(
        "--processes-rounds",
        type=int,
        help=(
            "interleaved rounds of the processes comparison "
            f"(default {processes.ROUNDS}, quick {processes.QUICK_ROUNDS})"
        ),
    )
    parser.add_argument(
        "--policy",
        action="store_true",
        help="run the suite's gateways with an auth policy; every call sends its API key",
    )
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--report", type=Path, metavar="FILE", help="only render FILE's report")
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every child is stopped on the way out."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    if args.report:
        results = json.loads(args.report.read_text(encoding="utf-8"))
        report.write(results, args.report, args.docs)
        print(f"bench: wrote {args.docs}")
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    options = Options(
        quick=args.quick,
        with_1e7=args.with_1e7,
        duration_s=args.duration or (1 if args.quick else 3),
        max_requests=args.max_requests,
        data_dir=args.data_dir.resolve(),
        database_url=os.environ.get("DATABASE_URL", ""),
        results_dir=args.results_dir,
        docs_path=args.docs,
        only=tuple(args.only),
        policy=args.policy,
        auth_rounds=args.auth_rounds or (3 if args.quick else auth.ROUNDS),
        metrics_rounds=args.metrics_rounds or (3 if args.quick else metrics.ROUNDS),
        processes_rounds=args.processes_rounds
        or (processes.QUICK_ROUNDS if args.quick else processes.ROUNDS),
    )
    try:
        results = Suite(options).run()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    # Only a full run is published; a quick or partial one stays under the data directory.
    suffix = ""
    if options.quick:
        suffix = "-quick"
    elif options.only:
        suffix = "-partial"
    elif options.policy:
        suffix = "-policy"
    out_dir = options.results_dir if not suffix else options.data_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{datetime.now(UTC):%Y-%m-%d}{suffix}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"bench: wrote {path}")
    docs = options.docs_path if not suffix else out_dir / "benchmarks.md"
    report.write(results, path, docs)
    print(f"bench: wrote {docs} ({results['run']['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
