"""The ``datamorph`` command: its global options (where the gateway is, who calls) and
its subcommands, which live in ``reads``, ``stream`` and ``workflows``.

Exit codes: 0 success; 1 the gateway (or the connection to it) failed the call, printed
as one line on stderr (message, code, reason, request id); 2 a usage error; 130 Ctrl-C.
"""

from __future__ import annotations

from typing import Annotated

import typer

from datamorph_client.cli import reads, stream, workflows
from datamorph_client.cli.session import Session

__all__ = ["app"]

DEFAULT_GATEWAY = "127.0.0.1:8080"
"""Envoy's listener under ``make run``: it carries gRPC as well as REST."""

app = typer.Typer(
    name="datamorph",
    help=(
        "Talk to a DataMorph Gateway over gRPC: read schemas and samples, run SQL, stream "
        "results, start workflows and follow their logs.\n\n"
        "Global options go before the command: [bold]datamorph --gateway HOST:PORT "
        "query ...[/bold]; each has an environment variable too."
    ),
    epilog=(
        "Examples:\n\n"
        "  datamorph health\n\n"
        "  datamorph query 'SELECT id, name FROM customers WHERE country = $1' -p DE\n\n"
        "  datamorph stream 'SELECT * FROM orders' --output csv > orders.csv\n\n"
        "  datamorph start 'SELECT country, count(*) AS n FROM customers GROUP BY 1' "
        "--target-table by_country --follow\n\n"
        "  DATAMORPH_GATEWAY=gateway.internal:443 DATAMORPH_TLS=1 datamorph schemas orders"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


@app.callback()
def connect(
    ctx: typer.Context,
    gateway: Annotated[
        str,
        typer.Option(
            "--gateway",
            "-g",
            envvar="DATAMORPH_GATEWAY",
            help="host:port of the gateway, or of Envoy's listener (which carries gRPC too).",
        ),
    ] = DEFAULT_GATEWAY,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="DATAMORPH_API_KEY", help="An API key (sent as x-api-key)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="DATAMORPH_TOKEN", help="An OAuth 2 / OIDC access token (Bearer)."),
    ] = None,
    aws_iam: Annotated[
        bool,
        typer.Option(
            "--aws-iam",
            envvar="DATAMORPH_AWS_IAM",
            help="Prove who you are with your AWS credentials (needs boto3 and --gateway-id).",
        ),
    ] = False,
    gateway_id: Annotated[
        str | None,
        typer.Option(
            envvar="DATAMORPH_GATEWAY_ID", help="The gateway's aws_iam.gateway_id, for --aws-iam."
        ),
    ] = None,
    aws_region: Annotated[
        str | None,
        typer.Option(envvar="AWS_REGION", help="The region to sign --aws-iam tokens for."),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", envvar="DATAMORPH_TLS", help="Use TLS, trusting the system's roots."),
    ] = False,
    ca_file: Annotated[
        str | None,
        typer.Option(
            envvar="DATAMORPH_CA_FILE", help="Verify the gateway with this CA (PEM); implies TLS."
        ),
    ] = None,
    cert_file: Annotated[
        str | None,
        typer.Option(envvar="DATAMORPH_CERT_FILE", help="Client certificate (PEM), for mTLS."),
    ] = None,
    key_file: Annotated[
        str | None,
        typer.Option(envvar="DATAMORPH_KEY_FILE", help="The client certificate's key (PEM)."),
    ] = None,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            envvar="DATAMORPH_TIMEOUT_S",
            min=0.001,
            help="Seconds a call may take \\[default: 30; workflows and streams: their own].",
        ),
    ] = None,
) -> None:
    if bool(cert_file) != bool(key_file):
        raise typer.BadParameter("--cert-file and --key-file go together")
    if aws_iam and not gateway_id:
        raise typer.BadParameter("--aws-iam needs --gateway-id (or DATAMORPH_GATEWAY_ID)")
    ctx.obj = Session(
        address=gateway,
        api_key=api_key,
        token=token,
        aws_iam=aws_iam,
        gateway_id=gateway_id,
        aws_region=aws_region,
        tls=tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        timeout_s=timeout_s,
    )


reads.register(app)
stream.register(app)
workflows.register(app)
