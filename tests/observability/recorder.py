"""A stand-in for one of the launcher's gateway processes, as far as metrics go.

``python recorder.py DIR INDEX`` records into the multiprocess directory DIR as process
INDEX would (10 × (INDEX + 1) GetData calls, one failed ExecuteQuery, a pool with INDEX + 1
connections lent, a running workflow), process 0 serves ``/metrics``, then it prints
``ready PORT`` and waits for a line on stdin.
"""

from __future__ import annotations

import sys

from datamorph_gateway.observability import metrics, metrics_server


def main() -> None:
    directory, index = sys.argv[1], int(sys.argv[2])
    metrics.init("9.9.9", multiprocess_dir=directory)
    for _ in range(10 * (index + 1)):
        metrics.rpc_finished("GetData", "OK", 0.002)
    metrics.rpc_finished("ExecuteQuery", "INTERNAL", 0.5)
    metrics.pool_gauge(8).report(index + 1, 2)
    metrics.workflow_started()
    server = None
    if index == 0:
        server = metrics_server.start_metrics_server("127.0.0.1", 0, directory)
    print(f"ready {server.port if server else 0}", flush=True)
    sys.stdin.readline()
    if server is not None:
        server.close()


if __name__ == "__main__":
    main()
