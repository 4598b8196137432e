"""``python -m bench.auth_split``: where authentication's added p50 at c=1 goes.

The auth comparison (``bench/auth.py``) judges the policy's whole added p50: the gateway
with a policy and a credential against the one without either. This splits it, with the
same c=1 client (``bench/alternate.py``: two systems, request by request in turn) and one
set of gateways (two without a policy, one with the bench's policy), into pairs measured
in the same rounds:

- ``A/A off``: the gateway without a policy against itself, both sent nothing: what the
  pairing alone reads as a difference (its bias and its noise);
- ``two gateways``: it against a second gateway without a policy, started the same way:
  what two processes alike but for where they landed differ by;
- ``<credential> carried``: the same gateway sent nothing against it sent the credential,
  which it ignores: what carrying the header costs the client, Envoy and grpcio;
- ``<credential> checked``: the gateway without a policy sent nothing against the one
  with it sent the credential: carriage plus the check, as the comparison measures it;
- ``A/A on``: the gateway with the policy against itself, both sent the credential.

It prints, per pair, the second system's p50 minus the first's for every round and their
median. Nothing is judged: it is for reading ``docs/benchmarks.md``'s auth rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bench import alternate, auth, data
from bench.scenarios import scenarios
from bench.stack import REPO
from bench.suite import start_gateways

OFF, OFF2, ON = "off", "off2", "on"


Pair = list[tuple[str, dict[str, str]]]


def pairs(credentials: auth.Credentials, variant: str) -> dict[str, Pair]:
    """Each pair's two systems, as (gateway, headers): the first is the one subtracted."""
    sent = credentials.headers(variant)
    return {
        "A/A off": [(OFF, {}), (OFF, {})],
        "two gateways": [(OFF, {}), (OFF2, {})],
        f"{variant} carried": [(OFF, {}), (OFF, sent)],
        f"{variant} checked": [(OFF, {}), (ON, sent)],
        "A/A on": [(ON, sent), (ON, sent)],
    }


def main(argv: list[str] | None = None) -> int:
    names = [s.name for s in scenarios()]
    parser = argparse.ArgumentParser(prog="python -m bench.auth_split", description=__doc__)
    parser.add_argument("--scenario", default="get_data_2e4", choices=names)
    parser.add_argument("--transport", default="grpc", choices=["grpc", "rest"])
    parser.add_argument("--credential", default="api_key", choices=["api_key", "jwt"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="per pair and round")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench")
    args = parser.parse_args(argv)
    scenario = next(s for s in scenarios() if s.name == args.scenario)
    with contextlib.ExitStack() as stack:
        db = data.open_database(args.data_dir.resolve())
        stack.callback(db.stop)
        data.ensure_dataset(db.dsn, data.DEFAULT_SIZES)
        os.environ.update(db.gateway_settings)
        run_dir = args.data_dir.resolve() / "auth_split"
        run_dir.mkdir(parents=True, exist_ok=True)
        credentials = auth.write_policy(run_dir / "auth")
        address: dict[str, str] = {}
        for which in (OFF, ON, OFF2):
            env = {"AUTH_POLICY_FILE": str(credentials.policy_file)} if which == ON else {}
            (gateway,), envoy = start_gateways(stack, run_dir / which, db.dsn, env)
            grpc = args.transport == "grpc"
            address[which] = gateway.address if grpc else f"{envoy.host}:{envoy.port}"
        measured = pairs(credentials, args.credential)
        out: dict[str, list[float]] = {label: [] for label in measured}
        for _ in range(args.rounds):
            for label, systems in measured.items():
                spec: dict[str, Any] = {
                    "transport": args.transport,
                    "method": scenario.rpc if args.transport == "grpc" else scenario.rest_method,
                    "path": scenario.rest_path,
                    "request": scenario.body,
                    "duration_s": args.seconds,
                    "max_requests": 10**6,
                    "timeout_s": 30,
                    "systems": [
                        {"name": str(i), "address": address[which], "headers": headers}
                        for i, (which, headers) in enumerate(systems)
                    ],
                }
                result = alternate.run(spec)
                first, second = result["0"].p50_ms, result["1"].p50_ms
                if first is None or second is None:  # no call of one of them succeeded
                    raise SystemExit(f"{label}: {result['0'].errors} {result['1'].errors}")
                out[label].append(1000 * (second - first))
    title = f"{scenario.name} {args.transport} c=1, {args.rounds} rounds of {args.seconds:g} s"
    print(f"{title}: the second system's p50 minus the first's, µs")
    for label, added in out.items():
        rounds = " ".join(f"{a:+.0f}" for a in added)
        print(f"  {label:<16} median {statistics.median(added):+5.0f}   rounds: {rounds}")
    (run_dir / "result.json").write_text(json.dumps({"title": title, "added_us": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
