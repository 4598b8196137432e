"""TLS on the gateway's gRPC port, with certificates re-read when their files change.

grpcio asks the fetcher below for a certificate configuration at each new TLS handshake;
it answers ``None`` (keep the current one) unless one of the files changed (size, mtime,
inode), and then the new files serve every connection from then on: a rotated certificate
needs no restart. Connections already open keep the certificate they were made with. A
half-written rotation (a key that does not match its certificate) is refused here and
logged; the previous configuration stays in use until the files are whole again (they are
checked again at each handshake until then).
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc

from datamorph_gateway.config import TlsSettings
from datamorph_gateway.errors import ConfigError

__all__ = ["ServerTls", "server_tls"]

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int, int], ...]


class ServerTls:
    """The port's credentials, plus the certificate it currently serves."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self._files = tuple(Path(p) for p in (cert_file, key_file, client_ca_file) if p)
        self._client_ca = bool(client_ca_file)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.cert_pem, config = self._load()
        self.credentials = grpc.dynamic_ssl_server_credentials(
            config, self._fetch, require_client_authentication=self._client_ca
        )

    @property
    def requires_client_certificates(self) -> bool:
        return self._client_ca

    def _stat(self) -> _Stamp:
        stamps = []
        for path in self._files:
            try:
                st = path.stat()
                stamps.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                stamps.append((-1, -1, -1))
        return tuple(stamps)

    def _load(self) -> tuple[bytes, grpc.ServerCertificateConfiguration]:
        try:
            data = [path.read_bytes() for path in self._files]
        except OSError as exc:
            raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
        cert, key = data[0], data[1]
        try:  # a key that does not match its certificate (a rotation half done) is refused
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self._files[0], self._files[1])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"TLS_CERT_FILE and TLS_KEY_FILE do not make a usable pair: {exc}"
            ) from None
        root = data[2] if self._client_ca else None
        return cert, grpc.ssl_server_certificate_configuration([(key, cert)], root)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = self._stat()
        with self._lock:
            if stamp == self._stamp:
                return None
            try:
                cert, config = self._load()
            except ConfigError as exc:
                log.warning(
                    "TLS files changed but could not be read (%s); keeping the old ones", exc
                )
                return None
            self._stamp, self.cert_pem = stamp, cert
        log.info("TLS certificate files changed; new connections use the new ones")
        return config


def server_tls(settings: TlsSettings) -> ServerTls | None:
    """The gRPC port's TLS, or None when TLS_CERT_FILE is not set (plaintext)."""
    if not settings.tls_cert_file:
        return None
    return ServerTls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
