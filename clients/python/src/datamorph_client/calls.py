"""A workflow under way: its run id as soon as it has one, its answer once it has finished.

``begin_workflow`` answers one of these at once, where ``start_workflow`` waits for the
end. The gateway sends the run id (the ``x-datamorph-run-id`` header) as soon as the run
holds its lease, so a caller can follow the run's log (``watch_logs``) while it runs.
Cancelling the call stops the wait, never the run: its log goes on being written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_client import _convert
from datamorph_client._base import RUN_ID_HEADER
from datamorph_client.errors import GatewayError, from_rpc_error
from datamorph_client.models import WorkflowResult

__all__ = ["AsyncWorkflowCall", "WorkflowCall"]


def _run_id(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == RUN_ID_HEADER:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _answer(responses: list[pb.StartWorkflowResponse]) -> WorkflowResult:
    if len(responses) != 1:
        raise GatewayError(grpc.StatusCode.INTERNAL, "StartWorkflow did not answer one message")
    return _convert.workflow_result(responses[0])


class WorkflowCall:
    """A StartWorkflow call of ``GatewayClient.begin_workflow``, under way."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def run_id(self) -> str | None:
        """The run's id, once the gateway has sent it; None if the call ended without one
        (it failed before the run started: ``result()`` raises why)."""
        return _run_id(self._call.initial_metadata())

    def result(self) -> WorkflowResult:
        """Wait for the run to finish: its answer, or ``GatewayError``."""
        try:
            return _answer(list(self._call))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def done(self) -> bool:
        return bool(self._call.done())

    def cancel(self) -> None:
        """Stop waiting for the answer (``result()`` raises CANCELLED); the run goes on."""
        self._call.cancel()


class AsyncWorkflowCall:
    """A StartWorkflow call of ``AsyncGatewayClient.begin_workflow``, under way."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def run_id(self) -> str | None:
        """The run's id, once the gateway has sent it; None if the call ended without one
        (it failed before the run started: ``result()`` raises why)."""
        return _run_id(await self._call.initial_metadata())

    async def result(self) -> WorkflowResult:
        """Wait for the run to finish: its answer, or ``GatewayError``."""
        try:
            return _answer([response async for response in self._call])
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        except asyncio.CancelledError:
            if not self._call.cancelled():
                raise  # the caller's task was cancelled, not the call
            raise GatewayError(grpc.StatusCode.CANCELLED, "the call was cancelled") from None

    def done(self) -> bool:
        return bool(self._call.done())

    def cancel(self) -> None:
        """Stop waiting for the answer (``result()`` raises CANCELLED); the run goes on."""
        self._call.cancel()
