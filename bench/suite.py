"""One bench run, start to finish: data in, the auth comparison (``bench/auth.py``), one
gateway process against two (``bench/processes.py``), stack up, probes, the matrix, the
extras, results.

Every server is a child process reaped in a ``finally`` (an ExitStack), every load run is
bounded in time and in count, and a scenario is timed only after one probe request
came back right from that system, so a fast stream of errors is never reported as speed.
With ``--policy`` the suite's gateways run with the auth comparison's policy and every
call to them carries its API key, so every target is judged with authentication on.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

from bench import auth, data, limit, measures, metrics, processes
from bench.clients import Answer, GrpcCaller, http_call
from bench.grpc_load import spread_target
from bench.hey_load import hey_binary, run_hey
from bench.loadstats import LoadResult
from bench.machine import machine_info
from bench.rest_load import run_wrk, wrk_binary
from bench.scenarios import (
    BASELINE_REST,
    CONCURRENCIES,
    GATEWAY_GRPC,
    GATEWAY_REST,
    LIMIT_SQL,
    QUICK_CONCURRENCIES,
    Scenario,
    scenarios,
)
from bench.stack import (
    Baseline,
    CpuMeter,
    Envoy,
    GatewayServer,
    StackError,
    free_port,
    gateway_env,
    postmaster_pid,
)
from bench.targets import OVERHEAD_SCENARIOS, RATIO_ROUNDS

RESULTS_VERSION = 1
SETTLED_HEALTH_S = 0.05
_ACTIVE_QUERIES = """
SELECT count(*) FROM pg_stat_activity
 WHERE state = 'active' AND pid <> pg_backend_pid() AND datname = current_database()
"""
REQUEST_TIMEOUT_S = 30
# The bench gateway lets the 100k-row query through (the default cap is 10,000 rows), so
# that scenario measures rows, not the cap; the start-up gateways keep every default.
GATEWAY_OVERRIDES = {"MAX_RESULT_ROWS": "100000"}
# The cells the targets compare, run again after the matrix (see Suite.repeats).
REPEAT_ROUNDS = 2
REPEAT_DURATION_S = 2
REPEATED_CELLS = [("get_data_2e4", c, (GATEWAY_REST, BASELINE_REST)) for c in (8, 64)] + [
    (name, 1, (GATEWAY_GRPC, GATEWAY_REST, LIMIT_SQL)) for name in OVERHEAD_SCENARIOS
]
# The GetData throughput comparison once more with hey as the load generator (issue 17: the
# ratio must hold with both wrk and hey), in rounds of its own interleaved with the repeats.
HEY_CELLS = [("get_data_2e4", 8, (GATEWAY_REST, BASELINE_REST))]
HEY_ROUNDS = RATIO_ROUNDS


AUTH = "auth"  # the --only name of the auth comparison
METRICS = "metrics"  # the --only name of the metrics off/on comparison
PROCESSES = "processes"  # the --only name of the comparison of 1 and 2 gateway processes
COMPARISONS = (AUTH, METRICS, PROCESSES)


@dataclass
class Options:
    """What the command line chose."""

    quick: bool
    with_1e7: bool
    duration_s: int
    max_requests: int
    data_dir: Path
    database_url: str
    results_dir: Path
    docs_path: Path
    only: tuple[str, ...] = ()
    policy: bool = False  # the suite's gateways run with a policy, and calls send its key
    auth_rounds: int = auth.ROUNDS
    metrics_rounds: int = metrics.ROUNDS
    processes_rounds: int = processes.ROUNDS

    @property
    def comparisons_only(self) -> bool:
        """``--only`` named comparisons (auth, processes) and no scenario: no matrix."""
        return bool(self.only) and set(self.only) <= set(COMPARISONS)

    @property
    def with_auth(self) -> bool:
        return not self.only or AUTH in self.only

    @property
    def with_metrics(self) -> bool:
        return not self.only or METRICS in self.only

    @property
    def with_processes(self) -> bool:
        return not self.only or PROCESSES in self.only


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _unique(body: dict[str, Any] | None) -> dict[str, Any] | None:
    """The body with its ``{n}`` placeholder (a new table's name) made unique."""
    if body is None:
        return None
    unique: dict[str, Any] = json.loads(
        json.dumps(body).replace("{n}", f"probe_{uuid.uuid4().hex[:12]}")
    )
    return unique


def _check_answer(scenario: Scenario, body: Any) -> str | None:
    """What is wrong with a successful-looking answer, if anything."""
    if not isinstance(body, dict):
        return "the answer is not a JSON object"
    if scenario.group == "get_data":
        table = scenario.grpc_request["table_names"][0]
        rows = (body.get("data") or {}).get(table)
        if not isinstance(rows, list) or len(rows) != 10:
            return f"expected 10 rows of {table}, got {rows!r:.200}"
    if scenario.group == "get_schemas":
        wanted = len(scenario.grpc_request["table_names"])
        if len(body.get("schemas") or {}) != wanted:
            return f"expected {wanted} schemas"
    if scenario.name == "execute_query_small" and int(body.get("row_count", -1)) != 10:
        return f"expected 10 rows, got row_count={body.get('row_count')}"
    return None


@dataclass
class Stack:
    """The servers under test, once they are all up, and what each gateway call sends."""

    gateway: GatewayServer
    envoy: Envoy
    baseline: Baseline | None
    meter: CpuMeter
    headers: dict[str, str] = field(default_factory=dict)  # a credential, or nothing
    # More processes of the same gateway behind the same Envoy (bench/processes.py).
    siblings: tuple[GatewayServer, ...] = ()

    @property
    def gateways(self) -> tuple[GatewayServer, ...]:
        return (self.gateway, *self.siblings)

    @property
    def grpc_target(self) -> str:
        """Where native gRPC calls go: the gateway, or all its processes round-robin."""
        return spread_target([g.address for g in self.gateways])


def start_gateways(
    servers: contextlib.ExitStack,
    directory: Path,
    dsn: str,
    env: dict[str, str],
    process_count: int = 1,
) -> tuple[list[GatewayServer], Envoy]:
    """`process_count` gateway processes on `dsn` (the bench's settings and `env`; each
    serving its metrics on a port of its own unless `env` sets METRICS_PORT) and one Envoy
    in front of them all, under `directory`; stopped when `servers` closes."""
    directory.mkdir(parents=True, exist_ok=True)
    gateways = []
    for n in range(1, process_count + 1):
        log_name = "gateway.log" if process_count == 1 else f"gateway-{n}.log"
        own = {} if "METRICS_PORT" in env else {"METRICS_PORT": str(free_port())}
        gateway = GatewayServer(
            gateway_env(dsn, **GATEWAY_OVERRIDES, **own, **env), directory / log_name
        )
        servers.callback(gateway.stop)
        gateway.start()
        gateways.append(gateway)
    envoy = Envoy(directory / "envoy", *(g.address for g in gateways))
    servers.callback(envoy.stop)
    envoy.start()
    return gateways, envoy


class Suite:
    """The systems under test, started once, and the run's results as they accumulate."""

    request_timeout_s = REQUEST_TIMEOUT_S

    def __init__(self, options: Options) -> None:
        self.options = options
        self.concurrencies = QUICK_CONCURRENCIES if options.quick else CONCURRENCIES
        selected = scenarios(with_1e7=options.with_1e7 or "get_data_1e7" in options.only)
        if options.comparisons_only:
            selected = []
        elif options.only:
            selected = [s for s in selected if s.name in options.only]
        elif options.quick:
            selected = [s for s in selected if s.quick]
        self.scenarios = selected
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_dir = options.data_dir / "runs" / stamp
        self._stack: Stack | None = None
        self.credentials: auth.Credentials | None = None  # --policy's
        self.postmaster: int | None = None
        self.dsn = ""
        self.admin_dsn = ""

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            raise RuntimeError("the servers are not running")
        return self._stack

    def check_alive(self, during: str, stack: Stack | None = None) -> None:
        """Stop the run when a server died: numbers after that would describe nothing."""
        stack = stack or self.stack
        parts = [("the gateway", g.poll(), g.log_path) for g in stack.gateways]
        parts.append(("Envoy", stack.envoy.poll(), stack.envoy.log_path))
        if stack.baseline is not None:
            parts.append(("the Flask baseline", stack.baseline.poll(), stack.baseline.log_path))
        for name, code, log_path in parts:
            if code is not None:
                raise StackError(f"{name} exited with code {code} during {during}; see {log_path}")

    # -- probes ----------------------------------------------------------------------

    def _call_once(self, scenario: Scenario, system: tuple[str, str], stack: Stack) -> Answer:
        envoy, baseline = stack.envoy, stack.baseline
        body = _unique(scenario.body)
        if system == GATEWAY_REST:
            return http_call(
                envoy.host,
                envoy.port,
                scenario.rest_method,
                scenario.rest_path,
                body,
                headers=stack.headers,
            )
        if system == BASELINE_REST:
            assert baseline is not None
            return http_call(
                "127.0.0.1",
                baseline.port,
                scenario.rest_method,
                scenario.rest_path,
                body,
            )
        if system == GATEWAY_GRPC:
            caller = GrpcCaller(stack.grpc_target, stack.headers)
            try:
                return caller.call(scenario.rpc, body or {})
            finally:
                caller.close()
        conn = limit.connect(self.dsn)
        try:
            start = time.perf_counter()
            limit.operation(scenario.limit_op, scenario.limit_args)(conn)
            return Answer(True, "OK", None, 0, time.perf_counter() - start)
        except Exception as exc:  # any failure means: do not time this
            return Answer(False, type(exc).__name__, str(exc), 0, 0.0)
        finally:
            conn.close()

    def probe(
        self, scenario: Scenario, system: tuple[str, str], stack: Stack | None = None
    ) -> dict[str, Any]:
        answer = self._call_once(scenario, system, stack or self.stack)
        problem = None
        if answer.ok and system != LIMIT_SQL:
            problem = _check_answer(scenario, answer.body)
        out: dict[str, Any] = {
            "ok": answer.ok and problem is None,
            "status": answer.status,
            "bytes": answer.size_bytes,
            "ms": answer.elapsed_s * 1000,
        }
        if not out["ok"]:
            out["detail"] = problem or f"{answer.body!s:.300}"
        # HOOK(StartWorkflow and any RPC not built yet): UNIMPLEMENTED (HTTP 501 through
        # Envoy) is recorded as "not available" and the scenario is left out of the matrix
        # for that system instead of failing the run.
        if answer.status in ("UNIMPLEMENTED", "HTTP 501"):
            out["not_available"] = True
        return out

    # -- load --------------------------------------------------------------------------

    def _subprocess_load(self, args: list[str], duration_s: int) -> LoadResult:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            timeout=duration_s + REQUEST_TIMEOUT_S + 60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()[-2000:]}")
        return LoadResult.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def load(
        self,
        scenario: Scenario,
        system: tuple[str, str],
        concurrency: int,
        duration_s: int,
        stack: Stack | None = None,
        tool: str = "wrk",
    ) -> LoadResult:
        """One load run; REST systems are loaded with `tool` (wrk, or hey)."""
        stack = stack or self.stack
        envoy, baseline = stack.envoy, stack.baseline
        cap = self.options.max_requests
        if system in (GATEWAY_REST, BASELINE_REST):
            if system == GATEWAY_REST:
                host, port, headers = envoy.host, envoy.port, stack.headers
            else:
                assert baseline is not None
                host, port, headers = "127.0.0.1", baseline.port, {}
            if tool == "hey":
                return run_hey(
                    f"http://{host}:{port}{scenario.rest_path}",
                    scenario.rest_method,
                    scenario.body,
                    concurrency=concurrency,
                    duration_s=duration_s,
                    timeout_s=REQUEST_TIMEOUT_S,
                    headers=headers,
                )
            return run_wrk(
                f"http://{host}:{port}{scenario.rest_path}",
                scenario.rest_method,
                scenario.body,
                concurrency=concurrency,
                duration_s=duration_s,
                max_requests=cap,
                timeout_s=REQUEST_TIMEOUT_S,
                headers=headers,
            )
        common = [
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration_s),
            "--max-requests",
            str(cap),
        ]
        if system == GATEWAY_GRPC:
            return self._subprocess_load(
                [
                    "bench.grpc_load",
                    "--target",
                    stack.grpc_target,
                    "--method",
                    scenario.rpc,
                    "--request",
                    json.dumps(scenario.grpc_request),
                    "--timeout",
                    str(REQUEST_TIMEOUT_S),
                    *(f"--metadata={key}={value}" for key, value in stack.headers.items()),
                    *common,
                ],
                duration_s,
            )
        return self._subprocess_load(
            [
                "bench.limit",
                "--dsn",
                self.dsn,
                "--op",
                scenario.limit_op,
                "--args",
                json.dumps(scenario.limit_args),
                *common,
            ],
            duration_s,
        )

    def cell(
        self,
        scenario: Scenario,
        system: tuple[str, str],
        concurrency: int,
        duration_s: int | None = None,
        stack: Stack | None = None,
        tool: str = "wrk",
    ) -> dict[str, Any]:
        """One cell; a run too slow to complete 2 requests per caller gets a longer window."""
        stack = stack or self.stack
        base = duration_s or self.options.duration_s
        meter = stack.meter
        before = meter.read()
        result = self.load(scenario, system, concurrency, base, stack, tool)
        cpu = CpuMeter.spent(before, meter.read())
        settle_s = self.settle(system, stack)
        extended = False
        longest = max(base, min(4 * base, 12))
        if result.ok < 2 * concurrency and result.error_count == 0 and longest > base:
            before = meter.read()
            result = self.load(scenario, system, concurrency, longest, stack, tool)
            cpu = CpuMeter.spent(before, meter.read())
            settle_s = self.settle(system, stack)
            extended = True
        return {
            "scenario": scenario.name,
            "system": system[0],
            "transport": system[1],
            "concurrency": concurrency,
            "extended": extended,
            **result.to_dict(),
            # Fewer answers than callers: the slowest requests never finished in the window,
            # so the latencies are a lower bound.
            "saturated": result.ok < concurrency,
            "cpu_s": {name: round(seconds, 3) for name, seconds in cpu.items()},
            "settle_s": round(settle_s, 2),
        }

    def transport_floor(self) -> dict[str, Any]:
        """A bare gRPC server's Health at c=1, natively and through Envoy (bench/floor.py)."""
        duration = self.options.duration_s
        cap = str(self.options.max_requests)
        with contextlib.ExitStack() as stack:
            server = GatewayServer(dict(os.environ), self.run_dir / "floor.log", "bench.floor")
            stack.callback(server.stop)
            server.start()
            envoy = Envoy(self.run_dir / "floor-envoy", server.address)
            stack.callback(envoy.stop)
            host, port = envoy.start()
            native = self._subprocess_load(
                [
                    *("bench.grpc_load", "--target", server.address, "--method", "Health"),
                    *("--concurrency", "1", "--duration", str(duration), "--max-requests", cap),
                ],
                duration,
            )
            rest = run_wrk(
                f"http://{host}:{port}/health",
                "GET",
                None,
                concurrency=1,
                duration_s=duration,
                max_requests=self.options.max_requests,
                timeout_s=REQUEST_TIMEOUT_S,
            )
        out = {"grpc": native.to_dict(), "rest": rest.to_dict()}
        for key, result in out.items():
            _log(f"floor {key}: p50 {result['p50_ms']:.2f} ms, {result['error_count']} errors")
        return out

    def settle(
        self, system: tuple[str, str], stack: Stack | None = None, limit_s: float = 120.0
    ) -> float:
        """Wait until the system has worked off what the load left queued; seconds waited.

        A load generator stops at its deadline, but requests it already sent may still sit
        in a server's accept queue (gunicorn's sync workers take one at a time) or run in
        PostgreSQL; the next cell must not pay for them. Settled means two quick health
        answers in a row from the system and no other active query in the database.
        """
        start = time.perf_counter()
        deadline = start + limit_s
        quick_in_a_row = 0
        while quick_in_a_row < 2 and time.perf_counter() < deadline:
            answer = self._health_now(system, stack or self.stack)
            quick_in_a_row = quick_in_a_row + 1 if answer < SETTLED_HEALTH_S else 0
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while time.perf_counter() < deadline:
                    cur.execute(_ACTIVE_QUERIES)
                    row = cur.fetchone()
                    if row is None or row[0] == 0:
                        break
                    time.sleep(0.05)
        finally:
            conn.close()
        return time.perf_counter() - start

    def _health_now(self, system: tuple[str, str], stack: Stack) -> float:
        """Seconds one health request takes on `system` right now (the limit: 0)."""
        if system == BASELINE_REST:
            assert stack.baseline is not None
            answer = http_call("127.0.0.1", stack.baseline.port, "GET", "/health", None)
            return answer.elapsed_s if answer.ok else SETTLED_HEALTH_S
        if system in (GATEWAY_REST, GATEWAY_GRPC):
            slowest = 0.0  # each process of the gateway must answer quickly
            for gateway in stack.gateways:
                caller = GrpcCaller(gateway.address)
                try:
                    answer = caller.call("Health", {})
                finally:
                    caller.close()
                slowest = max(slowest, answer.elapsed_s if answer.ok else SETTLED_HEALTH_S)
            return slowest
        return 0.0

    def matrix(self, probes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        runnable = [
            (s, system)
            for s in self.scenarios
            for system in s.systems
            if probes[s.name][f"{system[0]}/{system[1]}"]["ok"]
        ]
        total = len(runnable) * len(self.concurrencies)
        cells = []
        for scenario in self.scenarios:
            for concurrency in self.concurrencies:
                for s, system in runnable:
                    if s is not scenario:
                        continue
                    cell = self.cell(scenario, system, concurrency)
                    self.check_alive(f"{scenario.name} {system[0]}/{system[1]} c={concurrency}")
                    cells.append(cell)
                    self.log_progress(len(cells), total, cell)
        return cells

    def repeats(self, probes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The cells the targets read, run again in REPEAT_ROUNDS interleaved rounds, and
        the HEY_CELLS in HEY_ROUNDS rounds with hey as the load generator.

        One 3-second cell on a shared 2-core machine can be 20% off; the targets use the
        median over the matrix and these rounds. Each round runs every repeated cell once,
        the systems of a comparison back to back, with REPEAT_DURATION_S windows.
        """
        by_name = {s.name: s for s in self.scenarios}

        def plan_of(
            cells: Sequence[tuple[str, int, Sequence[tuple[str, str]]]], tool: str
        ) -> list[tuple[Scenario, int, tuple[str, str], str]]:
            return [
                (by_name[name], c, system, tool)
                for name, c, systems in cells
                if name in by_name and c in self.concurrencies
                for system in systems
                if probes[name].get(f"{system[0]}/{system[1]}", {}).get("ok")
            ]

        plan = plan_of(REPEATED_CELLS, "wrk")
        hey_plan = plan_of(HEY_CELLS, "hey")
        total = len(plan) * REPEAT_ROUNDS + len(hey_plan) * HEY_ROUNDS
        cells: list[dict[str, Any]] = []
        for round_no in range(1, max(REPEAT_ROUNDS, HEY_ROUNDS) + 1):
            chosen = (plan if round_no <= REPEAT_ROUNDS else []) + (
                hey_plan if round_no <= HEY_ROUNDS else []
            )
            for scenario, concurrency, system, tool in chosen:
                cell = self.cell(
                    scenario, system, concurrency, duration_s=REPEAT_DURATION_S, tool=tool
                )
                self.check_alive(f"repeat of {scenario.name} {system[0]}/{system[1]}")
                cell["round"] = round_no
                cells.append(cell)
                self.log_progress(len(cells), total, cell, "repeat ")
        return cells

    @staticmethod
    def log_progress(done: int, total: int, cell: dict[str, Any], prefix: str = "") -> None:
        _log(prefix + _progress(done, total, cell))

    # -- the run -----------------------------------------------------------------------

    def start_gateway(
        self,
        servers: contextlib.ExitStack,
        directory: Path,
        env: dict[str, str],
        process_count: int = 1,
    ) -> Stack:
        """A gateway (the bench's settings and `env`) as `process_count` processes, each with
        its own pool, and one Envoy in front of them all, under `directory`; stopped when
        `servers` closes. Its calls send no credential; its CPU is the processes' sum.
        Each process serves its metrics, as by default, on a port of its own (unless `env`
        sets METRICS_PORT)."""
        gateways, envoy = start_gateways(servers, directory, self.dsn, env, process_count)
        pids: dict[str, int | list[int]] = {
            "gateway": [g.pid for g in gateways],
            "envoy": envoy.pid,
        }
        if self.postmaster:
            pids["postgres"] = self.postmaster
        _log(
            "gateway gRPC "
            + ", ".join(f"{g.address} (pid {g.pid})" for g in gateways)
            + f", Envoy REST {envoy.host}:{envoy.port}"
            + (" with AUTH_POLICY_FILE" if "AUTH_POLICY_FILE" in env else "")
        )
        return Stack(gateways[0], envoy, None, CpuMeter(pids), siblings=tuple(gateways[1:]))

    def policy_env(self) -> dict[str, str]:
        """With --policy, the environment that gives a gateway the bench's policy."""
        if self.credentials is None:
            return {}
        return {"AUTH_POLICY_FILE": str(self.credentials.policy_file)}

    def _start_stack(self, servers: contextlib.ExitStack) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.options.policy:
            self.credentials = auth.write_policy(self.run_dir / "policy")
        stack = self.start_gateway(servers, self.run_dir, self.policy_env())
        baseline = Baseline(self.dsn, self.run_dir)
        servers.callback(baseline.stop)
        baseline.start()
        pids = {"gateway": stack.gateway.pid, "envoy": stack.envoy.pid, "baseline": baseline.pid}
        if self.postmaster:
            pids["postgres"] = self.postmaster
        headers = self.credentials.headers("api_key") if self.credentials else {}
        self._stack = Stack(stack.gateway, stack.envoy, baseline, CpuMeter(pids), headers)
        _log(f"Flask baseline 127.0.0.1:{baseline.port}")

    def run(self) -> dict[str, Any]:
        """Everything; returns the results document."""
        opts = self.options
        wrk_binary()  # fail now, not after loading data, when wrk or hey is missing
        hey_binary()
        started = datetime.now(UTC)
        clock = time.perf_counter()
        sizes = sorted(
            set(data.DEFAULT_SIZES) | {s.table_rows for s in self.scenarios if s.table_rows}
        )
        results: dict[str, Any] = {"version": RESULTS_VERSION}
        with contextlib.ExitStack() as outer:
            db = data.open_database(opts.data_dir, opts.database_url)
            outer.callback(db.stop)
            self.dsn = db.dsn
            self.admin_dsn = db.admin_dsn or db.dsn
            os.environ.update(db.gateway_settings)  # read by every gateway child's env
            if db.embedded is not None:
                self.postmaster = postmaster_pid(db.embedded.data_dir)
            _log("database ready; checking the dataset")
            results["dataset"] = {
                "external_database": bool(opts.database_url),
                "tables": {data.ROW_TABLES[n]: n for n in sizes},
                "schema_tables": len(data.SCHEMA_TABLES),
                "load_seconds": data.ensure_dataset(db.dsn, sizes),
                # The same catalog size and statistics at every start (see compact_catalogs).
                "catalogs_compacted": data.compact_catalogs(self.admin_dsn),
            }
            results["machine"] = machine_info(db.dsn)
            # The auth comparison first: it is short, and it needs the machine quietest.
            if opts.with_auth:
                duration_s = opts.duration_s if opts.quick else auth.DURATION_S
                _log(f"the auth comparison: policy off vs on, {opts.auth_rounds} rounds")
                results["auth"] = auth.compare(self, opts.auth_rounds, duration_s)
            if opts.with_metrics:
                duration_s = opts.duration_s if opts.quick else metrics.DURATION_S
                _log(f"the metrics comparison: off vs on, {opts.metrics_rounds} rounds")
                results["metrics"] = metrics.compare(self, opts.metrics_rounds, duration_s)
            if opts.with_processes:
                duration_s = opts.duration_s if opts.quick else processes.DURATION_S
                _log(f"one gateway process against two, {opts.processes_rounds} rounds")
                results["processes"] = processes.compare(self, opts.processes_rounds, duration_s)
            if opts.comparisons_only:
                results["cells"] = []
            else:
                self._suite(results, sizes)

        results["run"] = {
            "started_at": started.isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - clock, 1),
            # Other work on the machine competes for the same cores: compare with the start.
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "quick": opts.quick,
            "with_1e7": opts.with_1e7,
            "cell_duration_s": opts.duration_s,
            "max_requests_per_cell": opts.max_requests,
            "concurrencies": list(self.concurrencies),
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "gateway_overrides": GATEWAY_OVERRIDES,
            # --policy: the suite's gateways ran with an auth policy, every call with its key.
            "policy": opts.policy,
            "scenarios": [
                {"name": s.name, "title": s.title, "group": s.group, "table_rows": s.table_rows}
                for s in self.scenarios
            ],
        }
        return results

    def _suite(self, results: dict[str, Any], sizes: list[int]) -> None:
        """The matrix and the measurements around it, into `results`."""
        opts = self.options
        with contextlib.ExitStack() as servers:
            self._start_stack(servers)
            headers = self.stack.headers
            probes = {
                s.name: {f"{sy[0]}/{sy[1]}": self.probe(s, sy) for sy in s.systems}
                for s in self.scenarios
            }
            results["probes"] = probes
            _report_probes(probes)
            # The floor before and after the matrix: the machine's background load drifts.
            _log("timing the transport floor (bench/floor.py)")
            floors = [self.transport_floor()]
            results["cells"] = self.matrix(probes)
            if not opts.quick:
                _log(f"repeating the targets' cells ({REPEAT_ROUNDS} more rounds)")
                results["repeats"] = self.repeats(probes)
            _log("timing the transport floor again")
            floors.append(self.transport_floor())
            results["floor"] = {
                key: min((f[key] for f in floors), key=lambda r: r["p50_ms"] or float("inf"))
                for key in floors[0]
            } | {"runs": floors}
            _log("timing the 100k-row ExecuteQuery")
            results["large_query"] = measures.large_query(
                gateway=self.stack.gateway,
                rest=(self.stack.envoy.host, self.stack.envoy.port),
                baseline=self.stack.baseline,
                dsn=self.dsn,
                reps=1 if opts.quick else 3,
                headers=headers,
            )
            self.check_alive("the 100k-row ExecuteQuery")
            _log("streaming 10^6 rows")
            results["streaming"] = measures.streaming(
                gateway=self.stack.gateway,
                envoy_pid=self.stack.envoy.pid,
                rest=(self.stack.envoy.host, self.stack.envoy.port),
                dsn=self.dsn,
                table=data.ROW_TABLES[1_000_000] if 1_000_000 in sizes else None,
                headers=headers,
            )
            self.check_alive("the StreamQuery measurement")
        results["workflow_tables_dropped"] = measures.drop_workflow_tables(self.dsn)
        data.compact_catalogs(self.admin_dsn)
        _log("timing start-up (gateway, then the Flask baseline)")
        results["startup"] = {
            "gateway": measures.startup(
                self.dsn,
                self.run_dir,
                2 if opts.quick else 5,
                env=self.policy_env(),
                headers=headers,
            ),
            "baseline": measures.baseline_startup(self.dsn, self.run_dir, 1 if opts.quick else 3),
        }


def _report_probes(probes: dict[str, dict[str, Any]]) -> None:
    for name, by_system in probes.items():
        for system, probe in by_system.items():
            if not probe["ok"]:
                what = "not available" if probe.get("not_available") else "FAILED"
                _log(f"probe {name} {system}: {what} ({probe['status']}: {probe.get('detail')})")


def _progress(done: int, total: int, cell: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return (
        f"[{done:3d}/{total}] {cell['scenario']:<20} {cell['system']}/{cell['transport']:<4} "
        f"c={cell['concurrency']:<2} {cell['throughput_rps']:8.1f} rps  "
        f"p50 {ms(cell['p50_ms'])} ms  p99 {ms(cell['p99_ms'])} ms  "
        f"errors {cell['error_count']}" + ("  (extended)" if cell["extended"] else "")
    )
