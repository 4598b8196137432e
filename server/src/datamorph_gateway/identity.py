"""Who the caller proved to be with a client certificate (mTLS), for the auth policy.

Two ways a verified certificate reaches a call:

- **directly**: the caller's own TLS connection to the gRPC port; gRPC verified the
  certificate against ``TLS_CLIENT_CA_FILE`` and ``context.auth_context()`` holds it;
- **through the sidecar**: Envoy verified the certificate and forwards what it saw in
  ``x-forwarded-client-cert`` (XFCC), having first removed any copy the caller sent
  (``SANITIZE_SET``). Only a call carrying the sidecar's per-start secret (``SIDECAR_HEADER``,
  added by Envoy, checked here in constant time) is believed; on any other call XFCC is
  ignored, so a local process talking to the gRPC port cannot claim an identity by
  writing a header.

A connection that presents the gateway's own certificate is the sidecar (it uses that
certificate as its client certificate): without the secret it gets no identity at all,
never the gateway's own name.

The same secret decides whether ``x-forwarded-for`` means anything: Envoy runs with
``use_remote_address``, so it *appends* the address it saw to whatever the caller sent;
only the last entry of a call that carries the secret is the real client's address.
Every other copy of the header is the caller's own word and is ignored.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

import grpc

from datamorph_gateway.rpc import metadata_value
from datamorph_gateway.tls import ServerTls

__all__ = ["SIDECAR_HEADER", "ClientIdentities", "ClientIdentity", "parse_xfcc"]

SIDECAR_HEADER = "x-datamorph-sidecar"
XFCC_HEADER = "x-forwarded-client-cert"
XFF_HEADER = "x-forwarded-for"


@dataclass(frozen=True)
class ClientIdentity:
    """A verified client certificate: its subject (RFC 2253) and URI SANs."""

    subject: str
    uris: tuple[str, ...] = ()
    via: str = "tls"  # "tls" (direct) or "sidecar" (XFCC from Envoy)

    @property
    def name(self) -> str:
        """What an auth policy's ``tls_subjects`` matches: the first URI SAN, else the subject."""
        return self.uris[0] if self.uris else self.subject


def parse_xfcc(value: str) -> list[dict[str, list[str]]]:
    """XFCC's elements (one per proxy hop), each ``key -> values``; quoted values unescaped."""
    elements: list[dict[str, list[str]]] = []
    pairs: dict[str, list[str]] = {}
    token: list[str] = []
    key, quoted, escaped = "", False, False

    def end_pair() -> None:
        nonlocal key, token
        if key:
            pairs.setdefault(key.strip().lower(), []).append("".join(token))
        key, token = "", []

    for char in value:
        if escaped:
            token.append(char)
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            else:
                token.append(char)
        elif char == '"':
            quoted = True
        elif char == "=" and not key:
            key, token = "".join(token), []
        elif char == ";":
            end_pair()
        elif char == ",":
            end_pair()
            elements.append(pairs)
            pairs = {}
        else:
            token.append(char)
    end_pair()
    if pairs:
        elements.append(pairs)
    return elements


def _first(auth: dict[str, list[bytes]], key: str) -> str:
    values = auth.get(key) or []
    return values[0].decode("utf-8", "replace") if values else ""


def _pem_key(pem: bytes | str) -> str:
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    return "".join(text.split())


class ClientIdentities:
    """Resolves a call's verified client identity (see the module's docstring)."""

    def __init__(self, tls: ServerTls | None, sidecar_secret: str = "") -> None:
        self._tls = tls
        self._secret = sidecar_secret.encode()

    def from_sidecar(self, context: grpc.ServicerContext) -> bool:
        """True when the call carries this start's sidecar secret."""
        given = metadata_value(context, SIDECAR_HEADER)
        return (
            bool(self._secret)
            and given is not None
            and hmac.compare_digest(given.encode(), self._secret)
        )

    def forwarded_for(self, context: grpc.ServicerContext) -> str | None:
        """The client address our Envoy saw, or None for a call that did not come through it.

        The last ``x-forwarded-for`` entry (the one Envoy appended), when the call carries
        the sidecar secret and the entry is an IP address; an IPv4-mapped IPv6 address is
        given as IPv4.
        """
        if not self.from_sidecar(context):
            return None
        last: str | None = None
        for item in context.invocation_metadata() or ():
            if item.key == XFF_HEADER:
                last = str(item.value)
        if last is None:
            return None
        try:
            address = ipaddress.ip_address(last.rpartition(",")[2].strip())
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(address)

    def of(self, context: grpc.ServicerContext) -> ClientIdentity | None:
        """The caller's verified certificate identity, or None (no mTLS, or not verified)."""
        if self.from_sidecar(context):
            forwarded = metadata_value(context, XFCC_HEADER)
            if not forwarded:
                return None
            elements = parse_xfcc(forwarded)
            last = elements[-1] if elements else {}  # the hop our Envoy verified
            subject = (last.get("subject") or [""])[0]
            uris = tuple(u for u in last.get("uri", []) if u)
            return ClientIdentity(subject, uris, via="sidecar") if subject or uris else None
        if self._tls is None or not self._tls.requires_client_certificates:
            return None
        auth = context.auth_context() or {}
        pem = _first(auth, "x509_pem_cert")
        if not pem or _pem_key(pem) in _pem_key(self._tls.cert_pem):
            return None  # no certificate, or the gateway's own (the sidecar without its secret)
        subject = _first(auth, "x509_subject")
        uris = tuple(v.decode("utf-8", "replace") for v in auth.get("peer_uri", []) or [])
        return ClientIdentity(subject, uris) if subject or uris else None
