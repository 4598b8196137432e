"""``datamorph``: the gateway from a shell, on the client's gRPC calls (docs/cli.md).

It needs the ``cli`` extra (``pip install 'datamorph-gateway-client[cli]'``: typer and
rich), which a Lambda's bundle leaves out; without it the command says so and exits 1.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """The console script's entry point."""
    try:
        from datamorph_client.cli.app import app
    except ImportError as exc:  # the extra is not installed
        print(
            f"datamorph: {exc.msg}: install the command's extra: "
            "pip install 'datamorph-gateway-client[cli]'",
            file=sys.stderr,
        )
        sys.exit(1)
    app(prog_name="datamorph")
