"""LOG_FORMAT=json: one JSON object per line, for CloudWatch Logs Insights and the like.

Each line has ``timestamp`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
``where`` (function:line, as the text format), ``message``, ``request_id`` (stamped by
``logging_setup.RequestIdFilter``), ``trace_id`` and ``span_id`` while a span is current,
and the fields a call passes as ``extra=`` among ``FIELDS``: the access line's ``rpc``,
``code``, ``duration_ms``, ``peer``, ``principal`` and the audit line's ``forwarded_for``,
``user_agent``, ``params``, ``read_only``, ``rows``, ``outcome``, ``sql``.

Only those: any other attribute of the record stays out, so a line says no more than its
message (which is what the text format writes, after the gateway's redaction: SQL with
its constants masked by ``audit.mask_constants``, settings through
``Settings.redacted()``) and the named fields, which carry the same values the message
does. A record carrying ``emf`` (``emf.log_writer``) is an Embedded Metric Format record,
itself one JSON object: both formatters write it as it is, so CloudWatch can read it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from datamorph_gateway.observability import tracing

__all__ = ["EMF_ATTRIBUTE", "FIELDS", "JsonFormatter", "TextFormatter", "make_formatter"]

EMF_ATTRIBUTE = "emf"
FIELDS = (
    "principal",
    "rpc",
    "code",
    "duration_ms",
    "peer",
    "forwarded_for",
    "user_agent",
    "params",
    "read_only",
    "rows",
    "outcome",
    "sql",
)
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module's docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        raw = getattr(record, EMF_ATTRIBUTE, None)
        if isinstance(raw, str):
            return raw
        line: dict[str, Any] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "where": f"{record.funcName}:{record.lineno}",
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            line["request_id"] = request_id
        ids = tracing.current_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        for name in FIELDS:
            found = record.__dict__.get(name)
            if found is not None:
                line[name] = round(found, 2) if isinstance(found, float) else found
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The text format, except that an EMF record is written as it is."""

    def format(self, record: logging.LogRecord) -> str:
        raw = getattr(record, EMF_ATTRIBUTE, None)
        return raw if isinstance(raw, str) else super().format(record)


def make_formatter(log_format: str, text_format: str) -> logging.Formatter:
    """The formatter LOG_FORMAT names (``text``, the default, or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter(text_format)
    raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
