"""Stopping a child that runs in a process group of its own.

The launcher's gateway processes, Envoy and the bench's servers are started with
``start_new_session=True``, so a Ctrl-C in the terminal reaches only whoever started them,
which then stops each in turn: SIGTERM to the whole group, SIGKILL once its time is up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any

__all__ = ["signal_group", "stop_group"]


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group that ``pid`` leads; nothing if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_group(process: subprocess.Popen[Any], timeout_s: float) -> None:
    """SIGTERM the group of ``process``, SIGKILL it after ``timeout_s``; ``process`` is reaped.

    Nothing happens once ``process`` has exited.
    """
    if process.poll() is not None:
        return
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        signal_group(process.pid, signal.SIGKILL)
        process.wait()
