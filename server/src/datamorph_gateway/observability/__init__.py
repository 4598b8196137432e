"""What operators watch: Prometheus metrics, OpenTelemetry traces, JSON log lines and
CloudWatch Embedded Metric Format records (issue 14).

Each module takes plain values (ports, paths, flags), reads no settings and imports its
third-party library only when switched on, so a gateway with all of it off pays nothing:
``metrics`` (definitions and the recording calls), ``metrics_server`` (``/metrics`` and
the multiprocess directory), ``tracing`` (spans, off unless OTEL_* says otherwise),
``jsonlog`` (LOG_FORMAT=json), ``emf`` (METRICS_EMF).
"""
