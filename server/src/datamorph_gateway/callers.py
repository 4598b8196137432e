"""Who is calling, and how many of their queries the gateway is running.

A caller is named by a key. Today the key is the client's IP address (``ip:10.0.0.7``):

- a call that our Envoy sidecar forwarded is the address Envoy saw, which
  ``ClientIdentities.forwarded_for`` takes from ``x-forwarded-for`` only on a call that
  carries the sidecar's per-start secret;
- any other call is its peer address, without the port. A caller's own
  ``x-forwarded-for`` is never believed, so it cannot pick its key (nor spread its
  queries over many keys to escape its limit).

Once callers authenticate, the principal's name (``principal:<name>``) replaces the
address as the key.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from datamorph_gateway.errors import ResourceExhausted

__all__ = ["CallerLimits", "caller_key"]

# How long a refused caller is told to wait: queries are short or limited by
# STATEMENT_TIMEOUT_S, and a second is enough for one to finish or to back off.
RETRY_AFTER_S = 1


def caller_key(context: grpc.ServicerContext, forwarded_for: str | None = None) -> str:
    """The key the per-caller limits count under (see the module's docstring).

    ``forwarded_for`` is the client address our sidecar vouched for, if any.
    """
    if forwarded_for:
        return f"ip:{forwarded_for}"
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        address = _ip(rest.rpartition(":")[0].strip("[]"))
        if address is not None:
            return f"ip:{address}"
    return f"peer:{peer}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class CallerLimits:
    """At most ``limit`` queries of one caller at once; one more is refused at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def held(self, key: str) -> int:
        with self._lock:
            return self._held.get(key, 0)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Count one query of ``key`` for the block, or raise ``ResourceExhausted``."""
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.limit:
                raise self._refused()
            self._held[key] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._held[key] - 1
                if left:
                    self._held[key] = left
                else:
                    del self._held[key]

    def _refused(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"this caller already has {self.limit} queries running, the most one caller may "
            "run at once (MAX_CONCURRENT_QUERIES_PER_CALLER); retry when one has finished",
            reason="CALLER_QUERY_LIMIT",
            metadata={"limit": str(self.limit)},
            retry_delay_s=RETRY_AFTER_S,
        )
