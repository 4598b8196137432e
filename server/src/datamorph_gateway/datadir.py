"""One stack per data directory: ``DATA_DIR/stack.lock``.

The launcher (``make run``) always takes it, and ``python -m datamorph_gateway`` takes it
when it runs the embedded PostgreSQL itself, before either touches anything in
``DATA_DIR``. A second stack on the same directory is refused at once, with the owner's
pid, instead of stopping the first one's database as "a server left running".

The lock is ``flock`` on the open file, not the file's existence: the kernel drops it when
its owner dies, even by SIGKILL, so a crash never leaves a stale lock behind. The file
says who holds it (the first line, the owner's pid, for the message) and which children
the owner started (``record``). The descriptor is not inherited (Python's default), so
PostgreSQL, the gateway and Envoy never hold the lock themselves: when the owner dies,
they may still run. The next owner then stops what the dead one recorded (the gateway
and Envoy, which would hold its ports) and ``EmbeddedPostgres.start`` stops a PostgreSQL
left running: the one case where stopping another process's server is right, since the
lock proves no live stack owns it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

__all__ = ["LOCK_NAME", "DataDirInUse", "DataDirLock", "hold_data_dir"]

log = logging.getLogger(__name__)

LOCK_NAME = "stack.lock"
_LEFTOVER_STOP_S = 15.0  # a gateway drains for GRACE_PERIOD_S (5 s by default) first


class DataDirInUse(RuntimeError):
    """Another live process runs a stack on this data directory."""


class DataDirLock:
    """The held lock of one data directory; ``record`` notes a child to stop if we die,
    ``forget`` one that has exited."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lines = [str(os.getpid())]
        self._write()

    def record(self, name: str, pid: int) -> None:
        """Note child ``pid``, with its start time so that a recycled pid is never taken
        for it, to be stopped by the next owner if this one dies without stopping it."""
        try:
            started = psutil.Process(pid).create_time() if pid > 0 else None
        except psutil.Error:
            started = None
        if started is None:
            return  # never started, or already gone
        self._lines.append(f"{name} {pid} {started!r}")
        self._write()

    def forget(self, pid: int) -> None:
        """Drop child ``pid``, which has exited (a supervised child is started again under a
        new pid, recorded in its turn): the file lists the children running now."""
        self._lines = [self._lines[0]] + [
            line for line in self._lines[1:] if line.split()[1:2] != [str(pid)]
        ]
        self._write()

    def _write(self) -> None:
        data = ("\n".join(self._lines) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


@contextlib.contextmanager
def hold_data_dir(data_dir: str | Path) -> Iterator[DataDirLock]:
    """Own ``data_dir`` (created if missing) for the block, or raise ``DataDirInUse`` at once.

    What a dead owner left running (its recorded children) is stopped first.
    """
    directory = Path(data_dir).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            lines = _read(fd)
            # Empty in the instant between the owner's flock and its first write.
            owner = lines[0].strip() if lines and lines[0].strip().isdigit() else "unknown"
            raise DataDirInUse(
                f"DATA_DIR {directory} is in use by another stack (pid {owner}): stop that "
                "one first, or set DATA_DIR to another directory"
            ) from None
        _stop_leftovers(directory, _read(fd)[1:])
        lock = DataDirLock(fd)
        try:
            yield lock
        finally:
            os.ftruncate(fd, 0)  # the lock itself goes with the descriptor
    finally:
        os.close(fd)


def _read(fd: int) -> list[str]:
    """The file's lines: the owner's pid, then the children it recorded."""
    return os.pread(fd, 65536, 0).decode("utf-8", "replace").splitlines()


def _stop_leftovers(directory: Path, lines: list[str]) -> None:
    """Stop the children a dead owner recorded that still run: SIGTERM, then SIGKILL."""
    leftovers = []
    for line in lines:
        try:
            name, pid, started = line.split()
            process = psutil.Process(int(pid))
            if abs(process.create_time() - float(started)) > 1.0:
                continue  # the pid was given to another process since
            process.terminate()
        except (ValueError, psutil.Error):
            continue
        log.warning(
            "stopping the %s a dead stack left running on %s (pid %s)", name, directory, pid
        )
        leftovers.append(process)
    alive = _wait_gone(leftovers, _LEFTOVER_STOP_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    _wait_gone(alive, 5.0)


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after at most ``timeout_s`` (zombies are gone:
    they are not ours to reap)."""
    deadline = time.monotonic() + timeout_s
    while True:
        processes = [process for process in processes if _running(process)]
        if not processes or time.monotonic() >= deadline:
            return processes
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
