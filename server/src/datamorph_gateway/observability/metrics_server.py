"""``/metrics`` over HTTP, and the multiprocess directory's bookkeeping.

One process serves: the only one in single-process mode, process 0 of the launcher's N
(which reads every process's files in the directory, so the answer is the stack's
total). The launcher empties the directory when the stack starts (``prepare_directory``)
and, when a gateway process exits, removes its ``livesum`` gauges
(``process_exited``): its counters and histograms stay, so totals never go back.
"""

from __future__ import annotations

import glob
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from datamorph_gateway.observability import metrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.registry import Collector

__all__ = [
    "MetricsPortInUse",
    "MetricsServer",
    "prepare_directory",
    "process_exited",
    "start_metrics_server",
]

_JOIN_S = 5.0


class MetricsPortInUse(OSError):
    """The metrics address could not be bound (in use, or not this host's)."""


class MetricsServer:
    """A running ``/metrics`` endpoint; ``port`` is the one it bound (for port 0)."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host = str(httpd.server_address[0])
        self.port = int(httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(_JOIN_S)


def start_metrics_server(host: str, port: int, multiprocess_dir: str | None) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` (as GRPC_HOST is bound) from a daemon thread.

    With ``multiprocess_dir`` it answers the sum over every process's files there; without,
    this process's registry (``metrics.init`` must have run with ``prometheus=True``).
    Raises MetricsPortInUse when the address cannot be bound.
    """
    from prometheus_client import start_http_server

    source: Collector
    if multiprocess_dir is not None:
        from prometheus_client import CollectorRegistry, multiprocess

        source = CollectorRegistry()
        multiprocess.MultiProcessCollector(source, path=multiprocess_dir)
    else:
        own = metrics.registry()
        if own is None:
            raise RuntimeError("metrics.init(prometheus=True) must run before the server starts")
        source = own
    try:
        httpd, thread = start_http_server(port, addr=host, registry=source)
    except OSError as exc:
        raise MetricsPortInUse(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
    return MetricsServer(httpd, thread)


def prepare_directory(path: str | Path) -> None:
    """Make the directory, or empty it of a previous stack's files (at the stack's start)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)


def process_exited(pid: int, multiprocess_dir: str | Path) -> None:
    """A gateway process is gone: its share of the ``live*`` gauges goes with it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(multiprocess_dir))
