"""``python -m bench.profile``: where the gateway's time goes under one scenario's load.

Starts the bench database, the gateway (and Envoy for REST), drives one scenario at one
concurrency, and samples the gateway with py-spy meanwhile. It writes py-spy's collapsed
stacks and a summary of the functions with the most samples, by own time and by
inclusive time, so a missed target can be explained by a profile and the fix checked
against the next one. ``--credential api_key|jwt`` runs the gateway with the auth
comparison's policy (``bench/auth.py``) and sends that credential on every call.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

from bench import auth, data
from bench.grpc_load import run_load
from bench.rest_load import run_wrk
from bench.scenarios import scenarios
from bench.stack import REPO, Envoy, GatewayServer, gateway_env
from bench.suite import GATEWAY_OVERRIDES

RATE_HZ = 250


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -r bench/requirements.txt")
    return found


def summarize(collapsed: Path, possible: int, top: int = 25) -> str:
    """The hottest functions in py-spy's collapsed stacks ("frame;frame;... count")."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    share = f" ({100 * total / possible:.0f}% of the {possible} sampling instants)"
    lines = [f"{total} samples{share}", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    names = [s.name for s in scenarios(with_1e7=True)]
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--scenario", default="get_data_2e4", choices=names)
    parser.add_argument("--transport", default="rest", choices=["rest", "grpc"])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--gil", action="store_true", help="sample only the GIL holder")
    parser.add_argument(
        "--credential",
        choices=[v for v in auth.VARIANTS if v != auth.OFF],
        help="run the gateway with the bench's auth policy and send this credential",
    )
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "profiles",
        help="where the summary goes (the collapsed stacks go under --data-dir)",
    )
    args = parser.parse_args(argv)
    scenario = next(s for s in scenarios(with_1e7=True) if s.name == args.scenario)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{scenario.name}-{args.transport}-c{args.concurrency}" + ("-gil" if args.gil else "")
    stem += f"-{args.credential}" if args.credential else ""
    work_dir = args.data_dir.resolve() / "profiles"
    work_dir.mkdir(parents=True, exist_ok=True)
    collapsed = work_dir / f"{stem}.collapsed.txt"

    with contextlib.ExitStack() as stack:
        db = data.open_database(args.data_dir.resolve())
        stack.callback(db.stop)
        data.ensure_dataset(db.dsn, data.DEFAULT_SIZES)
        os.environ.update(db.gateway_settings)
        run_dir = work_dir / "run"
        run_dir.mkdir(exist_ok=True)
        env, headers = {}, {}
        if args.credential:
            credentials = auth.write_policy(run_dir / "auth")
            env = {"AUTH_POLICY_FILE": str(credentials.policy_file)}
            headers = credentials.headers(args.credential)
        gateway = GatewayServer(
            gateway_env(db.dsn, **GATEWAY_OVERRIDES, **env), run_dir / "gateway.log"
        )
        stack.callback(gateway.stop)
        gateway.start()
        spy = [
            _py_spy(), "record", "--pid", str(gateway.pid), "--duration", str(args.seconds),
            "--rate", str(RATE_HZ), "--format", "raw", "--output", str(collapsed), "--nonblocking",
        ]  # fmt: skip
        if args.gil:
            spy.append("--gil")
        if args.transport == "rest":
            envoy = Envoy(run_dir / "envoy", gateway.address)
            stack.callback(envoy.stop)
            host, port = envoy.start()
            recorder = threading.Thread(target=subprocess.run, args=(spy,), daemon=True)
            recorder.start()
            result = run_wrk(
                f"http://{host}:{port}{scenario.rest_path}",
                scenario.rest_method,
                scenario.body,
                concurrency=args.concurrency,
                duration_s=args.seconds,
                max_requests=10_000_000,
                headers=headers,
            )
        else:
            recorder = threading.Thread(target=subprocess.run, args=(spy,), daemon=True)
            recorder.start()
            result = asyncio.run(
                run_load(
                    gateway.address,
                    scenario.rpc,
                    json.dumps(scenario.grpc_request),
                    concurrency=args.concurrency,
                    duration_s=args.seconds,
                    max_requests=10_000_000,
                    timeout_s=30,
                    metadata=tuple(headers.items()),
                )
            )
        recorder.join(timeout=args.seconds + 30)
    summary = args.out / f"{date.today():%Y-%m-%d}-{stem}.txt"
    mode = "GIL holder only" if args.gil else "every thread that was not idle"
    header = (
        f"py-spy, {args.seconds} s at {RATE_HZ} Hz, {mode}. "
        f"{scenario.title}, {args.transport}, c={args.concurrency}"
        f"{', ' + args.credential if args.credential else ''}: "
        f"{result.throughput_rps:.0f} rps, p50 {result.p50_ms or 0:.2f} ms, "
        f"{result.error_count} errors\n"
    )
    text = header + summarize(collapsed, possible=args.seconds * RATE_HZ)
    summary.write_text(text, encoding="utf-8")
    print(text)
    print(f"bench.profile: wrote {summary} and {collapsed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
