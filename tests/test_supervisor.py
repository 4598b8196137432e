"""When the launcher starts a child again, and when it gives up (``supervisor``).

The backoff is bookkeeping, driven here with explicit times; the supervisor runs real
processes. The launcher's tests (``tests/test_launcher.py``) kill real children of a real
launcher.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from datamorph_gateway.supervisor import (
    CrashLoop,
    RestartPolicy,
    Restarts,
    Supervisor,
    describe_exit,
)


def test_the_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    restarts = Restarts(RestartPolicy(max_exits=100, window_s=60))
    backoffs = [restarts.exited(now=2.0 * i, ran_s=1.0) for i in range(7)]
    assert backoffs == [0.5, 1, 2, 4, 8, 10, 10]
    assert restarts.exited(now=20, ran_s=10) == 0.5  # it had run 10 s: stable
    assert restarts.exited(now=22, ran_s=1) == 1


def test_restart_max_exits_within_the_window_are_a_crash_loop() -> None:
    restarts = Restarts(RestartPolicy(max_exits=3, window_s=60))
    assert restarts.exited(now=0, ran_s=1) == 0.5
    assert restarts.exited(now=30, ran_s=1) == 1
    assert restarts.exited(now=61, ran_s=1) == 2  # the first has left the window: 2 in it
    assert restarts.recent == 2
    assert restarts.exited(now=89, ran_s=1) is None  # 30, 61 and 89 within 60 s
    assert restarts.recent == 3


def test_restart_max_1_gives_up_at_the_first_exit() -> None:
    assert Restarts(RestartPolicy(max_exits=1)).exited(now=0, ran_s=3600) is None


def test_an_exit_is_told_by_its_code_or_its_signal() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(2) == "exited with code 2"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-15) == "was killed by SIGTERM"


class _Command:
    """A real child for the supervisor: a command, ready once it has run ``ready_after_s``.

    The launcher's own children need a database and Envoy; this one needs nothing, so the
    supervisor's paths that the launcher's tests cannot reach on purpose run here.
    """

    kind = "command"

    def __init__(self, code: str, *, ready_after_s: float = 0.0, timeout_s: float = 5.0) -> None:
        self.name = "the command"
        self.address = "nowhere"
        self.start_timeout_s = timeout_s
        self._code = code
        self._ready_after_s = ready_after_s
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self.spawned: list[int] = []
        self.pid = self.spawn()

    def spawn(self) -> int:
        self._process = subprocess.Popen([sys.executable, "-c", self._code])
        self._started = time.monotonic()
        self.spawned.append(self._process.pid)
        return self._process.pid

    def ready(self) -> bool:
        return time.monotonic() - self._started >= self._ready_after_s

    def poll(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def reap(self) -> str:
        assert self._process is not None
        self._process.wait()
        self._process = None
        return "it said so"

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self.reap()


class _Pids:
    def __init__(self) -> None:
        self.running: set[int] = set()

    def record(self, name: str, pid: int) -> None:
        self.running.add(pid)

    def forget(self, pid: int) -> None:
        self.running.discard(pid)


def _until_crash_loop(supervisor: Supervisor, within_s: float) -> CrashLoop:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            supervisor.check()
        except CrashLoop as exc:
            return exc
        time.sleep(0.01)
    raise AssertionError("no crash loop")


def test_a_child_that_keeps_exiting_is_a_crash_loop_with_its_last_words() -> None:
    fast = RestartPolicy(max_exits=3, first_backoff_s=0.01)
    child = _Command("import sys; sys.exit(2)", ready_after_s=60)
    pids = _Pids()
    crash = _until_crash_loop(Supervisor([child], fast, pids), within_s=30)
    assert str(crash) == (
        "the command keeps exiting: 3 times within 60 s (RESTART_MAX=3, RESTART_WINDOW_S=60), "
        "the last time it exited with code 2 at start-up: it said so"
    )
    assert crash.code == 2  # its own configuration error
    assert pids.running == set()  # every pid it had was forgotten once it exited


def test_a_child_that_does_not_serve_in_time_is_stopped_and_counts_as_an_exit() -> None:
    fast = RestartPolicy(max_exits=2, first_backoff_s=0.01)
    child = _Command("import time; time.sleep(60)", ready_after_s=60, timeout_s=0.3)
    pids = _Pids()
    supervisor = Supervisor([child], fast, pids)
    first = psutil.Process(child.pid)
    first.kill()
    crash = _until_crash_loop(supervisor, within_s=30)
    assert str(crash).endswith(
        "the last time it did not serve within 0.3 s of starting (see above)"
    )
    assert crash.code == 1
    assert len(child.spawned) == 2
    assert not any(psutil.pid_exists(pid) for pid in child.spawned)  # stopped and reaped
    assert pids.running == set()
