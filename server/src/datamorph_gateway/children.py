"""The launcher's children: the gateway processes and Envoy, each started, watched, started
again on the address it had (``supervisor``) and stopped.

Each runs in a process group of its own, so a Ctrl-C in the terminal reaches only the
launcher, which then stops them in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from datamorph_gateway.observability import metrics_server
from datamorph_gateway.process_group import stop_group
from datamorph_gateway.sidecar import EnvoyProcess, SidecarOptions
from datamorph_gateway.sidecar.render import LISTENER, write_config

__all__ = ["PROG", "EnvoyChild", "GatewayProcess", "LaunchError"]

PROG = "datamorph-gateway"
_READY_LINE = re.compile(r"gRPC on (\S+)\s*$")
_GATEWAY_START_TIMEOUT_S = 120.0  # covers the database's connect attempts
_ENVOY_START_TIMEOUT_S = 30.0
_READER_JOIN_S = 5.0


class LaunchError(RuntimeError):
    """A part of the stack did not start, or stopped for good; the message says which and why.

    ``code`` is the launcher's exit code: 2 when the configuration is wrong, else 1.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class GatewayProcess:
    """``python -m datamorph_gateway`` as a child; its address is read from its ready line.

    Its output is passed through, except its last words: the one line it prints when it
    cannot go on (``datamorph-gateway: ...``), which the launcher reports as its own. It is
    started again on the port it bound the first time (with ``GRPC_PORT=0``, the one it
    picked), since Envoy's configuration names that port.
    """

    kind = "gateway"
    start_timeout_s = _GATEWAY_START_TIMEOUT_S

    def __init__(
        self, name: str, env: dict[str, str], port: int, grace_s: float, *, metrics_dir: str = ""
    ) -> None:
        self.name = name
        self._metrics_dir = metrics_dir  # shared with the other processes: see ``reap``
        self._env = env
        self.port = port  # 0 until the first start picked one
        self._grace_s = grace_s
        self._process: subprocess.Popen[bytes] | None = None
        self._readers: list[threading.Thread] = []
        self._ready = threading.Event()
        self._last_words = ""
        self.address = ""

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0]

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    def spawn(self) -> int:
        """Start it; its pid. ``ready`` says when it serves."""
        self._ready = ready = threading.Event()
        self._last_words = ""
        self._process = process = subprocess.Popen(
            [sys.executable, "-m", "datamorph_gateway"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(self._env, GRPC_PORT=str(self.port)),
            start_new_session=True,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read_stdout,
                args=(process.stdout, ready),
                name=f"{self.kind}-stdout",
                daemon=True,
            ),
            threading.Thread(
                target=self._read_stderr,
                args=(process.stderr,),
                name=f"{self.kind}-stderr",
                daemon=True,
            ),
        ]
        for reader in self._readers:
            reader.start()
        return process.pid

    def ready(self) -> bool:
        return self._ready.is_set()

    def poll(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def reap(self) -> str:
        """Once it exited: its last words (without the program's name), its pipes closed."""
        process, self._process = self._process, None
        if process is not None and self._metrics_dir:
            # Its share of the "now" gauges (connections, running workflows) goes with it;
            # its counts stay in the stack's totals.
            metrics_server.process_exited(process.pid, self._metrics_dir)
        for reader in self._readers:
            reader.join(timeout=_READER_JOIN_S)  # its last line may still be in the pipe
        if process is not None:
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        words, self._last_words = self._last_words, ""
        return words.removeprefix(f"{PROG}: ")

    def exited(self, code: int, when: str) -> LaunchError:
        """The launcher's error for a gateway that exited: its own last words, if it said any.

        A configuration error (exit 2, e.g. a database that refuses the login) is reported as
        the gateway worded it, so the reason is the launcher's last line too.
        """
        words = self.reap()
        if code == 2 and words:
            return LaunchError(words, code=2)
        said = f": {words}" if words else " (see above)"
        return LaunchError(f"{self.name} exited {when} with code {code}{said}")

    def _read_stdout(self, stream: IO[bytes], ready: threading.Event) -> None:
        """Take the address from the ready line; pass anything else through."""
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            match = _READY_LINE.search(line)
            if match and not ready.is_set():
                self.address = match.group(1)
                self.port = int(self.address.rpartition(":")[2])
                ready.set()
            else:
                sys.stdout.write(line)
                sys.stdout.flush()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        """Pass the log through; keep the line the gateway exits with for ``reap``."""
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            if line.startswith(f"{PROG}: "):
                self._last_words = line.strip()
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def reload(self) -> None:
        """SIGHUP: the gateway re-reads its auth policy."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM (the gateway drains for its grace period), then SIGKILL; always reaped."""
        process = self._process
        if process is None:
            return
        stop_group(process, self._grace_s + 10)
        words = self.reap()
        if words and process.returncode:  # not reported by ``exited``: say it now
            print(f"{PROG}: {words}", file=sys.stderr, flush=True)


class EnvoyChild:
    """Envoy in front of the gateway processes; started again where it listened first.

    With ``REST_PORT=0`` (or ``ENVOY_ADMIN_PORT=0``) the first start picks a port; before a
    restart the configuration is written again with the port it picked, so the addresses
    the launcher printed stay true.
    """

    name = kind = "Envoy"
    start_timeout_s = _ENVOY_START_TIMEOUT_S

    def __init__(
        self, run_dir: Path, options: SidecarOptions, descriptor: Path, binary: Path
    ) -> None:
        self._run_dir = run_dir
        self._descriptor = descriptor
        self._options = self._written = options
        self.process = EnvoyProcess(write_config(run_dir, options, descriptor), binary=binary)
        self.address = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def admin_address(self) -> str:
        return self.process.admin_address

    def start(self) -> tuple[str, int]:
        """The first start: return once Envoy is ready, with its listener's address."""
        self.process.start(self.start_timeout_s)
        host, port = self.process.listener_address(LISTENER)
        self.address = f"{host}:{port}"
        admin_port = self._options.admin_port
        if not self._options.admin_socket:
            admin_port = int(self.process.admin_address.rpartition(":")[2])
        self._options = dataclasses.replace(self._options, listen_port=port, admin_port=admin_port)
        return host, port

    def spawn(self) -> int:
        if self._options != self._written:
            write_config(self._run_dir, self._options, self._descriptor)
            self._written = self._options
        self.process.spawn()
        return self.process.pid

    def ready(self) -> bool:
        return self.process.ready()

    def poll(self) -> int | None:
        return self.process.poll()

    def reap(self) -> str:
        """Envoy's own log is on the launcher's stderr already: nothing more to say."""
        self.process.stop()
        return ""

    def stop(self) -> None:
        self.process.stop()
