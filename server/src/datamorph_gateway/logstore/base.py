"""The workflow-log port: what a run's log is, and how to read, append and follow one.

DataMorph's agents write a run's log as an append-only list of entries
(``timestamp``, ``type``, ``title``, ``description``, ``metadata``). Adapters only
know how to read a run from some position and how to append; following a live
run is built here once, on top of those two, so every store streams the same way.

Following wakes at once for entries appended by this process (the local
orchestrators write through the store) and otherwise re-reads every poll
interval: DataMorph's Lambdas write to DynamoDB behind our back, and nothing
there can wake us.
"""

from __future__ import annotations

import abc
import base64
import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from datamorph_gateway.errors import InvalidArgument, NotFound, clip

LOG_TYPES = frozenset(
    {"start", "status", "info", "code", "result", "warning", "error", "success", "end"}
)
TERMINAL_TYPES = frozenset({"success", "error", "end"})
"""Entry types after which a run may be over (see ``LogStore.follow``)."""

ENTRY_FIELDS = ("timestamp", "type", "title", "description", "metadata")
MAX_RUN_ID_CHARS = 256


@dataclass(frozen=True)
class RunLog:
    """A run's log entries (all of them, or those from ``offset`` on) and its timestamps."""

    run_id: str
    logs: list[dict[str, Any]]
    created_at: str
    updated_at: str
    offset: int = 0
    """Index in the run's log of ``logs[0]``; 0 unless read with ``read_from``."""

    def to_dict(self) -> dict[str, Any]:
        """The contract's GetLogs body, without ``status``."""
        return {
            "run_id": self.run_id,
            "log_count": len(self.logs),
            "logs": self.logs,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class LogEvent:
    """One entry of a followed run; ``index`` lets a client resume with ``start=index + 1``."""

    index: int
    entry: dict[str, Any]


def utc_timestamp(when: dt.datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as DataMorph's logger writes them."""
    moment = (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_entry(
    type_: str, title: str, description: str, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A new log entry stamped now."""
    return {
        "timestamp": utc_timestamp(),
        "type": type_,
        "title": title,
        "description": description,
        "metadata": json_safe(dict(metadata or {})),
    }


def json_safe(value: Any) -> Any:
    """The value as plain JSON (dict, list, str, int, float, bool, None).

    DynamoDB hands back Decimals (integral ones become ints), sets and bytes;
    callers of ``append`` may pass tuples, datetimes or NaN. None of that must
    reach a JSON encoder or a protobuf Struct.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((json_safe(v) for v in value), key=repr)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    raw = getattr(value, "value", None)  # boto3's Binary wrapper
    if isinstance(raw, (bytes, bytearray)):
        return base64.b64encode(bytes(raw)).decode("ascii")
    return str(value)


def normalize_entry(raw: Any) -> dict[str, Any]:
    """An entry with exactly the contract's five fields.

    The four text fields are strings ("" when missing); anything else an agent
    attached, at the top level or as a non-object ``metadata``, is kept inside
    ``metadata`` rather than dropped, since LogEntry has no other place for it.
    """
    if not isinstance(raw, Mapping):
        return {
            "timestamp": "",
            "type": "info",
            "title": "",
            "description": _text(raw),
            "metadata": {},
        }
    raw_meta = raw.get("metadata")
    if raw_meta is None:
        metadata: dict[str, Any] = {}
    elif isinstance(raw_meta, Mapping):
        metadata = json_safe(raw_meta)
    else:
        metadata = {"value": json_safe(raw_meta)}
    for key, value in raw.items():
        if key not in ENTRY_FIELDS:
            metadata.setdefault(str(key), json_safe(value))
    return {
        "timestamp": _text(raw.get("timestamp")),
        "type": _text(raw.get("type")),
        "title": _text(raw.get("title")),
        "description": _text(raw.get("description")),
        "metadata": metadata,
    }


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    safe = json_safe(value)
    return safe if isinstance(safe, str) else str(safe)


def check_run_id(run_id: str) -> None:
    """Refuse run ids no store can hold, before asking one. Formats are not enforced:
    DataMorph's own run ids (six hex digits) are as valid as the gateway's (eight)."""
    if not run_id.strip():
        raise InvalidArgument.field("run_id", "must not be empty")
    if len(run_id) > MAX_RUN_ID_CHARS:
        raise InvalidArgument.field("run_id", f"must be at most {MAX_RUN_ID_CHARS} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in run_id):
        raise InvalidArgument.field("run_id", "must not contain control characters")


class _AppendSignal:
    """Wakes followers of a run when this process appends to it.

    Only runs someone follows have a slot, so the map stays as small as the
    number of open streams.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slots: dict[str, list[int]] = {}  # run id -> [version, followers]

    def notify(self, run_id: str) -> None:
        with self._cond:
            slot = self._slots.get(run_id)
            if slot is not None:
                slot[0] += 1
                self._cond.notify_all()

    @contextmanager
    def subscribe(self, run_id: str) -> Iterator[Callable[[float], None]]:
        """A ``wait(timeout_s)`` that returns early if the run changed since the last wait.

        Subscribe before reading: an append between the read and the wait then
        still ends the wait at once.
        """
        with self._cond:
            slot = self._slots.setdefault(run_id, [0, 0])
            slot[1] += 1
            seen = slot[0]

        def wait(timeout_s: float) -> None:
            nonlocal seen
            with self._cond:
                self._cond.wait_for(lambda: slot[0] != seen, timeout_s)
                seen = slot[0]

        try:
            yield wait
        finally:
            with self._cond:
                slot[1] -= 1
                if slot[1] == 0:
                    del self._slots[run_id]


class LogStore(abc.ABC):
    """Where workflow logs live. Adapters implement reading, appending and closing.

    Every method may raise ``Unavailable`` (the store cannot be reached) or
    ``FailedPrecondition`` (the store is misconfigured, e.g. a missing table).
    """

    def __init__(self, *, poll_interval_s: float = 1.0) -> None:
        self.poll_interval_s = poll_interval_s
        self._signal = _AppendSignal()

    # -- adapters --------------------------------------------------------------

    @abc.abstractmethod
    def read_from(self, run_id: str, start: int) -> RunLog | None:
        """The run's entries from index ``start`` on (``offset == start``); None if no such run."""

    @abc.abstractmethod
    def _append(self, run_id: str, entry: dict[str, Any]) -> None:
        """Append one normalized entry, creating the run's log if needed."""

    def close(self) -> None:  # noqa: B027 - optional hook, not every store holds resources
        """Release clients and connections; the default has none."""

    # -- shared ------------------------------------------------------------------

    def get(self, run_id: str) -> RunLog | None:
        """The run's whole log, or None if the run has none."""
        return self.read_from(run_id, 0)

    def require(self, run_id: str) -> RunLog:
        """GetLogs: the run's whole log; InvalidArgument for a bad id, NotFound for none."""
        check_run_id(run_id)
        found = self.get(run_id)
        if found is None:
            raise NotFound(f"no logs for run {clip(run_id)!r}", reason="RUN_NOT_FOUND")
        return found

    def append(self, run_id: str, entry: Mapping[str, Any]) -> None:
        """Append one entry (normalized, stamped now if it has no timestamp) and wake followers."""
        check_run_id(run_id)
        normalized = normalize_entry(entry)
        if not normalized["timestamp"]:
            normalized["timestamp"] = utc_timestamp()
        self._append(run_id, normalized)
        self._signal.notify(run_id)

    def wake(self, run_id: str) -> None:
        """Make followers of the run re-read now (e.g. because its invocation ended)."""
        self._signal.notify(run_id)

    def follow(
        self,
        run_id: str,
        *,
        timeout_s: float,
        start: int = 0,
        running: Callable[[], bool] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[LogEvent]:
        """Yield the run's entries from ``start`` on as they are written, then stop.

        When it stops: with ``running`` (the caller knows the run is in
        progress), once ``running()`` is false and the last entries are read;
        without it, once the run's newest entry is a success, error or end
        entry (a component's end in the middle of a run is followed by more
        entries, so only the newest counts). Always at ``timeout_s``, or when
        ``should_stop()`` is true (checked at least every poll interval).

        Raises NotFound, before yielding anything, for a run with no log that
        is not ``running``; InvalidArgument for a bad id.
        """
        check_run_id(run_id)
        deadline = time.monotonic() + timeout_s
        cursor = max(start, 0)
        seen_run = False
        with self._signal.subscribe(run_id) as wait:
            while True:
                # Sample before reading, so the read after the run ends gets everything.
                in_progress = running is not None and running()
                # Re-read the newest entry already seen too: its type tells whether
                # a run with nothing new has ended.
                page = self.read_from(run_id, max(cursor - 1, 0))
                if page is None:
                    if not in_progress:
                        if seen_run:
                            return
                        raise NotFound(f"no logs for run {clip(run_id)!r}", reason="RUN_NOT_FOUND")
                else:
                    seen_run = True
                    newest = page.logs[-1] if page.logs else None
                    for i, entry in enumerate(page.logs):
                        index = page.offset + i
                        if index >= cursor:
                            yield LogEvent(index, entry)
                    cursor = max(cursor, page.offset + len(page.logs))
                    if running is not None and not in_progress:
                        return
                    if running is None and newest is not None and newest["type"] in TERMINAL_TYPES:
                        return
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (should_stop is not None and should_stop()):
                    return
                wait(min(self.poll_interval_s, remaining))
