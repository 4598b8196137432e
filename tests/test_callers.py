"""Who a caller is, and how many queries one caller may have in flight."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple

import pytest
from google.rpc import error_details_pb2

from datamorph_gateway.callers import CallerLimits, caller_key
from datamorph_gateway.errors import ResourceExhausted
from datamorph_gateway.identity import SIDECAR_HEADER, ClientIdentities
from datamorph_gateway.status import google_status


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
    ("peer", "forwarded_for", "key"),
    [
        ("ipv4:10.1.2.3:51234", None, "ip:10.1.2.3"),
        ("ipv6:[2001:db8::7]:51234", None, "ip:2001:db8::7"),
        ("ipv6:[::ffff:10.1.2.3]:4000", None, "ip:10.1.2.3"),
        ("ipv4:127.0.0.1:6000", None, "ip:127.0.0.1"),
        # The address our sidecar vouched for (see ClientIdentities.forwarded_for).
        ("ipv4:127.0.0.1:6000", "192.0.2.9", "ip:192.0.2.9"),
        ("unix:/run/gw.sock", "192.0.2.9", "ip:192.0.2.9"),
        ("unix:/run/gw.sock", None, "peer:unix:/run/gw.sock"),
        ("ipv4:not-an-address:1", None, "peer:ipv4:not-an-address:1"),
    ],
)
def test_caller_key(peer: str, forwarded_for: str | None, key: str) -> None:
    assert caller_key(Context(peer), forwarded_for) == key


SECRET = "per-start-secret"


@pytest.mark.parametrize(
    ("peer", "metadata", "forwarded_for"),
    [
        # Through our Envoy: the last entry is the one Envoy appended, whatever came before.
        (
            "ipv4:127.0.0.1:6000",
            (("x-forwarded-for", "198.51.100.1, 192.0.2.9"), (SIDECAR_HEADER, SECRET)),
            "192.0.2.9",
        ),
        (
            "ipv6:[::1]:6000",
            (("x-forwarded-for", "::ffff:192.0.2.9"), (SIDECAR_HEADER, SECRET)),
            "192.0.2.9",
        ),
        ("ipv4:127.0.0.1:6000", ((SIDECAR_HEADER, SECRET),), None),
        ("ipv4:127.0.0.1:6000", (("x-forwarded-for", "nope"), (SIDECAR_HEADER, SECRET)), None),
        # Without the secret, a forged header is the caller's own word, loopback or not.
        ("ipv4:127.0.0.1:6000", (("x-forwarded-for", "192.0.2.9"),), None),
        ("unix:/run/gw.sock", (("x-forwarded-for", "192.0.2.9"),), None),
        ("ipv4:10.1.2.3:51234", (("x-forwarded-for", "192.0.2.9"),), None),
        (
            "ipv4:127.0.0.1:6000",
            (("x-forwarded-for", "192.0.2.9"), (SIDECAR_HEADER, "a-guess")),
            None,
        ),
    ],
)
def test_forwarded_for_is_believed_only_from_our_sidecar(
    peer: str, metadata: Sequence[tuple[str, str]], forwarded_for: str | None
) -> None:
    identities = ClientIdentities(None, SECRET)
    assert identities.forwarded_for(Context(peer, metadata)) == forwarded_for
    assert ClientIdentities(None, "").forwarded_for(Context(peer, metadata)) is None


def test_one_caller_is_refused_past_its_limit_and_others_are_not() -> None:
    limits = CallerLimits(2)
    with limits.hold("ip:10.0.0.1"), limits.hold("ip:10.0.0.1"):
        with pytest.raises(ResourceExhausted) as err, limits.hold("ip:10.0.0.1"):
            pass
        assert "MAX_CONCURRENT_QUERIES_PER_CALLER" in err.value.message
        assert err.value.reason == "CALLER_QUERY_LIMIT"
        assert err.value.metadata == {"limit": "2"}
        (_, packed) = google_status(err.value, "-").details
        retry = error_details_pb2.RetryInfo()
        assert packed.Unpack(retry)
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
