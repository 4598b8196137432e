"""What the numbers were measured on: the machine, the versions, the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from datamorph_gateway.sidecar import envoy_binary

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _output(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _envoy_version() -> str:
    """ "1.40.0" out of "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"."""
    text = _output([str(envoy_binary()), "--version"]).split("version:")[-1].strip()
    parts = text.split("/")
    return parts[1] if len(parts) > 1 else text


def machine_info(dsn: str) -> dict[str, Any]:
    """Hardware, software versions and the git commit, for the results file."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
            pg_version = str(row[0]) if row else ""
    finally:
        conn.close()
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = bool(_output(["git", "-C", str(REPO), "status", "--porcelain"]))
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": pg_version,
        "envoy": _envoy_version(),
        "wrk": _output(["wrk", "--version"]).split(" [")[0],
        # hey prints no version of its own: the Debian package's.
        "hey": _output(["dpkg-query", "-W", "-f", "${Version}", "hey"]),
        "grpcio": _version("grpcio"),
        "psycopg2": _version("psycopg2-binary"),
        "flask": _version("flask"),
        "gunicorn": _version("gunicorn"),
        "git_commit": commit + ("+uncommitted" if dirty else ""),
        # Anything else running on the machine competes for the same 2 cores.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
