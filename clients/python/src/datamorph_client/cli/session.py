"""What every subcommand shares: the client the global options describe, and how a
failure is told (one line on stderr, an exit code, never a traceback)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

import typer

from datamorph_client.client import GatewayClient
from datamorph_client.errors import GatewayError

__all__ = ["INTERRUPTED", "Session", "error_line", "interrupted", "reported", "session"]

INTERRUPTED = 130
"""The exit code after Ctrl-C (128 + SIGINT), as shells report it."""


@dataclasses.dataclass(frozen=True)
class Session:
    """The global options: where the gateway is and who calls it."""

    address: str
    api_key: str | None = None
    token: str | None = None
    aws_iam: bool = False
    gateway_id: str | None = None
    aws_region: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout_s: float | None = None

    def client(self) -> GatewayClient:
        """A client for the gateway; a file or option it cannot use is a usage error."""
        try:
            return GatewayClient(
                self.address,
                timeout_s=30.0 if self.timeout_s is None else self.timeout_s,
                api_key=self.api_key,
                bearer_token=self.token,
                aws_iam=self.aws_iam,
                gateway_id=self.gateway_id,
                aws_region=self.aws_region,
                tls=self.tls,
                ca_file=self.ca_file,
                cert_file=self.cert_file,
                key_file=self.key_file,
            )
        except (OSError, ValueError, ImportError) as exc:
            raise typer.BadParameter(str(exc)) from None


def session(ctx: typer.Context) -> Session:
    found = ctx.find_object(Session)
    assert found is not None, "the app's callback makes the session"
    return found


def error_line(exc: GatewayError) -> str:
    """A failed call in one line: the gateway's message, then what identifies it."""
    message = " ".join(exc.message.split()) or "(no message)"
    facts = [exc.code_name]
    for label, value in (
        ("reason", exc.reason),
        ("sqlstate", exc.sqlstate),
        ("run id", exc.run_id),
        ("request id", exc.request_id),
    ):
        if value:
            facts.append(f"{label} {value}")
    if exc.retry_delay_s is not None:
        facts.append(f"retry in {exc.retry_delay_s:g} s")
    line = f"error: {message} ({', '.join(facts)})"
    for violation in exc.violations:
        said = f"{violation.field}: {' '.join(violation.description.split())}"
        if said not in message:
            line += f"; {said}"
    return line


def _quiet_stdout() -> None:
    """After a broken pipe: nothing more to write, and nothing to flush at exit."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


_ctrl_c = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _ctrl_c.set()
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether Ctrl-C was pressed during this command. gRPC may report it as the call's
    end (a ``GatewayError``, CANCELLED) rather than let the ``KeyboardInterrupt`` through,
    depending on where the signal lands; either way the command was interrupted."""
    return _ctrl_c.is_set()


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Run a command's body: a gateway error prints one line and exits 1, a reader that
    went away (``| head``) ends it quietly, and Ctrl-C exits 130."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    except GatewayError as exc:
        if interrupted():
            print("interrupted", file=sys.stderr)
            raise typer.Exit(INTERRUPTED) from None
        print(error_line(exc), file=sys.stderr)
        raise typer.Exit(1) from None
    except BrokenPipeError:
        _quiet_stdout()
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
