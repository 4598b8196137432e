"""``DATA_DIR/stack.lock``: one stack per data directory, and what a dead owner left behind.

Real processes: an owner in a subprocess, SIGKILLed as a crash would kill it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from datamorph_gateway.datadir import LOCK_NAME, DataDirInUse, hold_data_dir

# An owner that starts a child of its own, records it, says both pids and waits to die.
_OWNER = """
import subprocess, sys, time
from datamorph_gateway.datadir import hold_data_dir
with hold_data_dir(sys.argv[1]) as lock:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    lock.record("sleeper", child.pid)
    print(child.pid, flush=True)
    time.sleep(300)
"""


@contextlib.contextmanager
def _owner(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], psutil.Process]]:
    """A live owner of ``data_dir`` and the child it recorded; both are gone afterwards."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    child = psutil.Process(int(owner.stdout.readline()))
    try:
        yield owner, child
    finally:
        for process in (owner, child):
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                process.kill()
        owner.wait(10)
        owner.stdout.close()


def test_a_second_owner_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with _owner(tmp_path) as (owner, child):
        with pytest.raises(DataDirInUse) as refused, hold_data_dir(tmp_path):
            pass
        message = str(refused.value)
        assert f"DATA_DIR {tmp_path.resolve()} is in use by another stack (pid {owner.pid})" in (
            message
        )
        assert "\n" not in message
        assert owner.poll() is None
        assert child.is_running()


def test_a_lock_is_released_when_its_owner_ends(tmp_path: Path) -> None:
    with (
        hold_data_dir(tmp_path),
        pytest.raises(DataDirInUse, match=f"pid {os.getpid()}"),
        hold_data_dir(tmp_path),
    ):
        pass
    with hold_data_dir(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_a_sigkilled_owner_leaves_no_lock_and_its_children_are_stopped(tmp_path: Path) -> None:
    with _owner(tmp_path) as (owner, child):
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert child.is_running()  # a crash leaves its children running...
        with hold_data_dir(tmp_path):  # ...the next owner gets the lock and stops them
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
            assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_a_recorded_pid_now_held_by_another_process_is_left_alone(tmp_path: Path) -> None:
    # A dead owner's record whose pid the system has since given to this very process.
    (tmp_path / LOCK_NAME).write_text(f"1\ngateway {os.getpid()} 0.0\n")
    with hold_data_dir(tmp_path):
        pass  # still alive to say so


def test_the_lock_file_lists_the_children_running_now(tmp_path: Path) -> None:
    """A child that exited is forgotten, so that a supervisor starting it again under a new
    pid leaves the file naming exactly what runs: what the next owner stops if we die."""
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    children = [subprocess.Popen(sleep), subprocess.Popen(sleep)]
    try:
        with hold_data_dir(tmp_path) as lock:
            for child in children:
                lock.record("gateway", child.pid)
            lock.forget(children[0].pid)
            lines = (tmp_path / LOCK_NAME).read_text().splitlines()
            assert lines[0] == str(os.getpid())
            assert [line.split()[:2] for line in lines[1:]] == [["gateway", str(children[1].pid)]]
    finally:
        for child in children:
            child.kill()
            child.wait(10)
