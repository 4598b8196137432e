"""AWS clients as the gateway makes them, and the error code of a call AWS refused.

A client talks to its service's endpoint setting, else ``AWS_ENDPOINT_URL``, else AWS
itself; it waits at most ``AWS_TIMEOUT_S`` to connect and to read, and retries in
botocore's standard mode. A caller with other needs says so: the Lambda orchestrator waits
as long as the longest workflow and never retries (a retried invoke would run it twice).
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from datamorph_gateway.config import AwsSettings

__all__ = ["client", "error_code"]


def client(
    settings: AwsSettings,
    service: str,
    endpoint_url: str = "",
    *,
    session: boto3.session.Session | None = None,
    max_attempts: int = 2,
    connect_timeout_s: float | None = None,
    read_timeout_s: float | None = None,
    **config: Any,
) -> Any:
    """A client of ``service``; annotate what it is assigned to with the service's stub type.

    ``max_attempts`` is botocore's (retries after the first attempt); the timeouts default
    to ``AWS_TIMEOUT_S``; ``config`` holds any other ``botocore.config.Config`` option.
    """
    chosen: Any = session or boto3.session.Session()  # any service, not one stub
    default_s = settings.aws_timeout_s
    return chosen.client(
        service,
        region_name=settings.aws_region,
        endpoint_url=endpoint_url or settings.aws_endpoint_url or None,
        config=Config(
            connect_timeout=default_s if connect_timeout_s is None else connect_timeout_s,
            read_timeout=default_s if read_timeout_s is None else read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            **config,
        ),
    )


def error_code(exc: botocore.exceptions.ClientError) -> str:
    """The code AWS answered with (``AccessDeniedException``...); ``ClientError`` if none."""
    return str(exc.response.get("Error", {}).get("Code", "ClientError"))
