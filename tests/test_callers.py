"""Who a caller is, and how many queries one caller may have in flight."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple

import pytest
from google.rpc import error_details_pb2

from datamorph_gateway.callers import CallerLimits, caller_key
from datamorph_gateway.errors import ResourceExhausted


class Item(NamedTuple):
    """One metadata entry, as grpc hands them to a servicer."""

    key: str
    value: str


class Context:
    """A stand-in for grpc.ServicerContext with a chosen peer: a real server cannot be
    reached from a non-loopback address or a forged one inside a test. The gateway's own
    tests (test_starvation.py) cover the real thing through gRPC and Envoy."""

    def __init__(self, peer: str, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._peer = peer
        self._metadata = [Item(k, v) for k, v in metadata]

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> list[Item]:
        return self._metadata


@pytest.mark.parametrize(
    ("peer", "metadata", "key"),
    [
        ("ipv4:10.1.2.3:51234", (), "ip:10.1.2.3"),
        ("ipv6:[2001:db8::7]:51234", (), "ip:2001:db8::7"),
        ("ipv6:[::ffff:10.1.2.3]:4000", (), "ip:10.1.2.3"),
        # A remote peer's x-forwarded-for is its own word: ignored.
        ("ipv4:10.1.2.3:51234", (("x-forwarded-for", "192.0.2.9"),), "ip:10.1.2.3"),
        # Loopback is Envoy: the last entry is the address Envoy saw.
        ("ipv4:127.0.0.1:6000", (("x-forwarded-for", "198.51.100.1, 192.0.2.9"),), "ip:192.0.2.9"),
        ("ipv6:[::1]:6000", (("x-forwarded-for", "192.0.2.9"),), "ip:192.0.2.9"),
        ("ipv4:127.0.0.1:6000", (), "ip:127.0.0.1"),
        ("ipv4:127.0.0.1:6000", (("x-forwarded-for", "not an address"),), "ip:127.0.0.1"),
        ("unix:/run/gw.sock", (("x-forwarded-for", "192.0.2.9"),), "ip:192.0.2.9"),
        ("unix:/run/gw.sock", (), "peer:unix:/run/gw.sock"),
    ],
)
def test_caller_key(peer: str, metadata: Sequence[tuple[str, str]], key: str) -> None:
    assert caller_key(Context(peer, metadata)) == key  # type: ignore[arg-type]


def test_one_caller_is_refused_past_its_limit_and_others_are_not() -> None:
    limits = CallerLimits(2)
    with limits.hold("ip:10.0.0.1"), limits.hold("ip:10.0.0.1"):
        with pytest.raises(ResourceExhausted) as err, limits.hold("ip:10.0.0.1"):
            pass
        assert "MAX_CONCURRENT_QUERIES_PER_CALLER" in err.value.message
        assert err.value.reason == "CALLER_QUERY_LIMIT"
        assert err.value.metadata == {"limit": "2"}
        (retry,) = err.value.extra_details
        assert isinstance(retry, error_details_pb2.RetryInfo)
        assert retry.retry_delay.seconds >= 1
        with limits.hold("ip:10.0.0.2"):
            assert limits.held("ip:10.0.0.2") == 1
        assert limits.held("ip:10.0.0.1") == 2
    assert limits.held("ip:10.0.0.1") == 0


def test_a_failing_query_gives_its_place_back() -> None:
    limits = CallerLimits(1)
    for _ in range(3):
        with pytest.raises(KeyError), limits.hold("ip:10.0.0.1"):
            raise KeyError("the query failed")
    assert limits.held("ip:10.0.0.1") == 0


def test_limits_hold_across_threads() -> None:
    limits = CallerLimits(3)
    inside = 0
    most = 0
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def run() -> None:
        nonlocal inside, most
        barrier.wait()
        for _ in range(200):
            try:
                with limits.hold("ip:10.0.0.1"):
                    with lock:
                        inside += 1
                        most = max(most, inside)
                    with lock:
                        inside -= 1
            except ResourceExhausted:
                pass

    threads = [threading.Thread(target=run) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most <= 3
    assert limits.held("ip:10.0.0.1") == 0
