"""The processes a bench run drives: the gateway, Envoy in front of it, and the Flask baseline.

Each runs as a child in a process group of its own, on a port it picked or was given
free, with its output in the run directory; ``stop()`` always reaps it (SIGTERM, then
SIGKILL to the whole group). The gateway must be a separate process: its peak RSS is
read from ``/proc/<pid>/status``, and it must not share a GIL with the load generators.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil

from datamorph_gateway import process_group
from datamorph_gateway.excerpts import tail
from datamorph_gateway.sidecar import EnvoyProcess, SidecarOptions, write_config
from datamorph_gateway.sidecar.cluster import GATEWAY_CLUSTER
from datamorph_gateway.sidecar.render import LISTENER

REPO = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = REPO / "envoy" / "gateway.binpb"
_READY_LINE = re.compile(r"gRPC on (\S+)\s*$", re.MULTILINE)
_POLL_S = 0.02


class StackError(RuntimeError):
    """A process of the stack did not start; the message names it and shows its log."""


def free_port() -> int:
    """A port nobody listens on right now (for servers that cannot report a port-0 bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_group(process: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after `timeout_s`; always reap."""
    if process is None:
        return
    if process.poll() is not None:
        # The leader is gone; make sure nothing it started outlives it.
        process_group.signal_group(process.pid, signal.SIGKILL)
    process_group.stop_group(process, timeout_s)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return tail(text, lines)


def gateway_env(dsn: str, **overrides: str) -> dict[str, str]:
    """The environment of a gateway child: ours, its database, a free port, and overrides."""
    env = dict(os.environ)
    env.update({"DATABASE_URL": dsn, "GRPC_HOST": "127.0.0.1", "GRPC_PORT": "0"})
    env.update(overrides)
    return env


class _Child:
    """A child in a process group of its own, its output in ``log_path``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self.process.poll() if self.process is not None else None

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process, timeout_s=15.0)
        if self._log is not None:
            self._log.close()
            self._log = None


class GatewayServer(_Child):
    """``python -m datamorph_gateway`` as deployed; its address comes from its ready line."""

    def __init__(
        self, env: dict[str, str], log_path: Path, module: str = "datamorph_gateway"
    ) -> None:
        super().__init__(log_path)
        self._env = env
        self._module = module  # bench.floor serves a bare server with the same ready line
        self.address = ""

    def launch(self) -> None:
        """Spawn the process and return at once (start-up timing polls it by itself)."""
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self._module],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,
        )

    def start(self, timeout_s: float = 60.0) -> str:
        """Spawn it and wait for its ready line; its gRPC address."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            match = _READY_LINE.search(self.log_path.read_text(encoding="utf-8", errors="replace"))
            if match:
                self.address = match.group(1)
                return self.address
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = f"exited with code {code}" if code is not None else "did not start in time"
                raise StackError(f"the gateway {why}:\n{_tail(self.log_path)}")
            time.sleep(_POLL_S)


class Envoy:
    """Envoy in front of the gateway processes at `upstreams` (one cluster, round-robin):
    REST/JSON on a port it picked."""

    def __init__(self, run_dir: Path, *upstreams: str) -> None:
        endpoints = []
        for upstream in upstreams:
            host, _, port = upstream.rpartition(":")
            endpoints.append((host, int(port)))
        options = SidecarOptions(
            listen_port=0,
            admin_socket=str(run_dir.resolve() / "admin.sock"),
            upstreams=tuple(endpoints),
            health_check_interval_s=1.0,
            access_log_path="",  # one file write per request would be Envoy's largest cost
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        config = write_config(run_dir, options, DESCRIPTOR_SET)
        self.log_path = run_dir / "envoy.log"
        self._config = str(config)
        self._process = EnvoyProcess(config, log_path=self.log_path)
        self.host = ""
        self.port = 0
        self.pid = 0

    def start(self) -> tuple[str, int]:
        self._process.start()
        # Ours among the Envoys this process runs (the auth comparison runs two): its config.
        self.pid = next(
            (
                c.pid
                for c in psutil.Process().children()
                if c.name() == "envoy" and self._config in c.cmdline()
            ),
            0,
        )
        self.host, self.port = self._process.listener_address(LISTENER)
        return self.host, self.port

    def workers(self) -> int:
        """The worker threads Envoy runs (its ``--concurrency``), as its admin API says."""
        info = json.loads(self._process.admin("/server_info"))
        return int(info["command_line_options"]["concurrency"])

    def healthy_upstreams(self) -> int:
        """How many of the gateway cluster's endpoints pass Envoy's health check now."""
        prefix = f"{GATEWAY_CLUSTER}::"
        return sum(
            1
            for line in self._process.admin("/clusters").splitlines()
            if line.startswith(prefix) and line.endswith("::health_flags::healthy")
        )

    def poll(self) -> int | None:
        return self._process.poll()

    def stop(self) -> None:
        self._process.stop()


class Baseline(_Child):
    """The Flask gateway rebuilt (bench/baseline): gunicorn with 4 sync workers."""

    def __init__(self, dsn: str, run_dir: Path, workers: int = 4) -> None:
        super().__init__(run_dir / "baseline.log")
        self._dsn = dsn
        self._workers = workers
        self._app_log = run_dir / "baseline-app.log"
        self.port = 0

    def start(self, timeout_s: float = 60.0) -> int:
        """Start gunicorn and wait until GET /health answers 200; the port it serves."""
        self.port = free_port()
        env = dict(os.environ)
        env.update({"BASELINE_DSN": self._dsn, "BASELINE_LOG_FILE": str(self._app_log)})
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(self._workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--chdir",
                str(REPO),
                "bench.baseline.app:app",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not http_ok("127.0.0.1", self.port, "/health"):
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError(f"the Flask baseline did not start:\n{_tail(self.log_path)}")
            time.sleep(_POLL_S)
        return self.port

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return [p.pid for p in psutil.Process(self.process.pid).children()]


def http_ok(host: str, port: int, path: str) -> bool:
    """Whether GET `path` answers 200 right now."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        connection.close()


def peak_rss_bytes(pids: list[int]) -> int:
    """The largest VmHWM (peak resident set) among `pids`, from /proc/<pid>/status."""
    peak = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) * 1024)
    return peak


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5), so a peak belongs to one scenario."""
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and all its descendants, live or already reaped."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def postmaster_pid(data_dir: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid`` (its first line), if it is readable."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


class CpuMeter:
    """CPU seconds each part of the stack spends between two readings.

    On a 2-core machine every part competes for the same cores, so throughput is
    bounded by the CPU one request costs in all of them together; this says where it
    goes. PostgreSQL's backends are forked and reaped by the postmaster, so their time
    shows up in its children's times; the load generators are our own reaped children.
    """

    def __init__(self, pids: Mapping[str, int | Sequence[int]]) -> None:
        # A part may be several processes (the gateway run as N): their times are summed.
        self._pids = {
            name: (pid,) if isinstance(pid, int) else tuple(pid) for name, pid in pids.items()
        }

    def read(self) -> dict[str, float]:
        out = {name: sum(_tree_cpu_s(pid) for pid in pids) for name, pids in self._pids.items()}
        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["load generator"] = own.ru_utime + own.ru_stime
        return out

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: max(after[name] - before.get(name, 0.0), 0.0) for name in after}
