"""Keeping the launcher's children running: started again after a backoff, and a crash loop
stops the stack.

Once the stack is up, the launcher hands its children (each gateway process, and Envoy)
to a ``Supervisor`` and calls ``check`` from its main loop every tenth of a second. One
thread does everything, so a restart cannot race the shutdown: when Ctrl-C or SIGTERM
arrives the loop stops calling ``check``, and the launcher stops whatever runs, a child
started a moment before included.

A child that exits gets one log line (which, pid, exit code or signal, its last words)
and is started again, on the address it had, after a backoff: ``first_backoff_s``,
doubling with each exit up to ``max_backoff_s``, and back to the first once it had run
``stable_s``. Starting again does not block: the child is spawned, and the next turns
look whether it serves yet, so the others are watched meanwhile. ``max_exits`` exits of
one child within ``window_s`` (RESTART_MAX, RESTART_WINDOW_S) are a crash loop: ``check``
raises ``CrashLoop`` with the last exit's cause.
"""

from __future__ import annotations

import collections
import enum
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Child", "CrashLoop", "RestartPolicy", "Restarts", "Supervisor", "describe_exit"]

log = logging.getLogger(__name__)


class Child(Protocol):
    """A child process as the supervisor sees it."""

    name: str  # for people: "the gateway", "gateway 1", "Envoy"
    kind: str  # for the data directory's lock file: "gateway", "Envoy"
    address: str  # where it serves; the same after a restart
    start_timeout_s: float  # how long a restart may take before it counts as an exit

    @property
    def pid(self) -> int: ...

    def spawn(self) -> int:
        """Start it again (it has been reaped); its pid. Returns at once."""
        ...

    def ready(self) -> bool:
        """Whether it serves, since the last ``spawn``."""
        ...

    def poll(self) -> int | None:
        """Its exit code (negative: the signal that ended it), or None while it runs."""
        ...

    def reap(self) -> str:
        """Once it exited: release what it held; the last thing it said before, or ""."""
        ...

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and reap it; a no-op when it does not run."""
        ...


class PidRecord(Protocol):
    """Where the pids of the running children are kept (``datadir.DataDirLock``)."""

    def record(self, name: str, pid: int) -> None: ...

    def forget(self, pid: int) -> None: ...


class CrashLoop(RuntimeError):
    """A child exited ``max_exits`` times within the window; the message says why it did.

    ``code`` is the launcher's exit code: 2 when the last exit was a configuration error
    (the child's own code 2), else 1.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RestartPolicy:
    """When a child is started again, and when its exits are a crash loop."""

    max_exits: int = 5  # RESTART_MAX: 1 means never started again
    window_s: float = 60.0  # RESTART_WINDOW_S
    first_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    stable_s: float = 10.0  # a child that ran this long starts over at first_backoff_s


class Restarts:
    """One child's recent exits: how long to wait before starting it again, or a crash loop."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._exits: collections.deque[float] = collections.deque()
        self._next_backoff_s = policy.first_backoff_s

    @property
    def recent(self) -> int:
        """Its exits within the window, as of the last ``exited``."""
        return len(self._exits)

    def exited(self, now: float, ran_s: float) -> float | None:
        """Note an exit at ``now`` after ``ran_s`` of running: the backoff before the next
        start, or None when this exit makes a crash loop."""
        policy = self._policy
        self._exits.append(now)
        while self._exits[0] <= now - policy.window_s:
            self._exits.popleft()
        if len(self._exits) >= policy.max_exits:
            return None
        if ran_s >= policy.stable_s:
            self._next_backoff_s = policy.first_backoff_s
        backoff = self._next_backoff_s
        self._next_backoff_s = min(backoff * 2, policy.max_backoff_s)
        return backoff


def describe_exit(code: int) -> str:
    """How a process ended, as a phrase: "exited with code 1", "was killed by SIGKILL"."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _State(enum.Enum):
    RUNNING = "running"
    STARTING = "starting"  # spawned again, not serving yet
    WAITING = "waiting"  # exited, backing off


class _Watch:
    """One child and what the supervisor knows of it."""

    def __init__(self, child: Child, policy: RestartPolicy, now: float) -> None:
        self.child = child
        self.restarts = Restarts(policy)
        self.state = _State.RUNNING
        self.pid = child.pid
        self.since = now  # when it was (last) started
        self.exited_at = 0.0  # when it last exited
        self.due = 0.0  # WAITING: when to start it again; STARTING: when to give up on it


class Supervisor:
    """Watches running children and starts each one that exits again (see the module)."""

    def __init__(
        self,
        children: Sequence[Child],
        policy: RestartPolicy,
        pids: PidRecord,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._pids = pids
        self._clock = clock
        now = clock()
        self._watches = [_Watch(child, policy, now) for child in children]

    def check(self) -> None:
        """One look at every child: note exits, start again those whose backoff is over,
        and see whether those starting serve yet. Raises ``CrashLoop``."""
        for watch in self._watches:
            now = self._clock()
            child = watch.child
            if watch.state is _State.WAITING:
                if now >= watch.due:
                    self._spawn(watch, now)
                continue
            code = child.poll()
            if code is not None:
                how = describe_exit(code)
                if watch.state is _State.STARTING:
                    how += " at start-up"
                self._exited(watch, now, how, code, child.reap())
            elif watch.state is _State.STARTING:
                if child.ready():
                    watch.state = _State.RUNNING
                    log.info(
                        "%s serves again on %s (pid %d), %.1f s after it exited",
                        child.name,
                        child.address,
                        watch.pid,
                        now - watch.exited_at,
                    )
                elif now >= watch.due:
                    child.stop()
                    how = f"did not serve within {child.start_timeout_s:g} s of starting"
                    self._exited(watch, now, how, 1, "")

    def _spawn(self, watch: _Watch, now: float) -> None:
        try:
            watch.pid = watch.child.spawn()
        except (OSError, RuntimeError) as exc:  # Popen's, or Envoy's configuration
            watch.pid = 0
            watch.since = now  # it did not run at all
            self._exited(watch, now, "could not be started", 1, str(exc))
            return
        self._pids.record(watch.child.kind, watch.pid)
        watch.state = _State.STARTING
        watch.since = now
        watch.due = now + watch.child.start_timeout_s

    def _exited(self, watch: _Watch, now: float, how: str, code: int, words: str) -> None:
        child = watch.child
        if watch.pid:
            self._pids.forget(watch.pid)
        said = f": {words}" if words else (" (see above)" if code > 0 else "")
        backoff = watch.restarts.exited(now, ran_s=now - watch.since)
        policy = self._policy
        if backoff is None:
            if policy.max_exits == 1:
                reason = f"{child.name} {how}{said} (RESTART_MAX=1: not started again)"
            else:
                reason = (
                    f"{child.name} keeps exiting: {watch.restarts.recent} times within "
                    f"{policy.window_s:g} s (RESTART_MAX={policy.max_exits}, RESTART_WINDOW_S="
                    f"{policy.window_s:g}), the last time it {how}{said}"
                )
            raise CrashLoop(reason, code=2 if code == 2 else 1)
        pid = f"pid {watch.pid}, " if watch.pid else ""
        log.warning(
            "%s (%s%s) %s%s; starting it again in %g s",
            child.name,
            pid,
            child.address,
            how,
            said,
            backoff,
        )
        watch.state = _State.WAITING
        watch.exited_at = now
        watch.due = now + backoff
