"""TLS: the listener's (downstream) and the gateway's (upstream) TLS contexts, and the SDS
files through which Envoy reads, and re-reads when they change, the PEM files they name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamorph_gateway.sidecar.fragments import typed
from datamorph_gateway.sidecar.options import SidecarOptions

__all__ = ["CLIENT_CA", "SERVER_CERTIFICATE", "UPSTREAM_CA", "sds_secrets", "tls_context"]

_TLS_SOCKET = "envoy.transport_sockets.tls"
_SDS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SERVER_CERTIFICATE = "server_certificate"
CLIENT_CA = "client_ca"
UPSTREAM_CA = "upstream_ca"


def sds_secrets(options: SidecarOptions) -> dict[str, dict[str, Any]]:
    """The SDS files' secrets: Envoy watches each file and the PEM files it names."""
    if not options.tls_cert_file:
        return {}
    cert = str(Path(options.tls_cert_file).resolve())
    secrets = {
        SERVER_CERTIFICATE: {
            "@type": _SDS_TYPE,
            "name": SERVER_CERTIFICATE,
            "tls_certificate": {
                "certificate_chain": {"filename": cert},
                "private_key": {"filename": str(Path(options.tls_key_file).resolve())},
            },
        }
    }
    if options.tls_client_ca_file:
        ca = str(Path(options.tls_client_ca_file).resolve())
        secrets[CLIENT_CA] = {
            "@type": _SDS_TYPE,
            "name": CLIENT_CA,
            "validation_context": {"trusted_ca": {"filename": ca}},
        }
    if options.upstream_tls:
        secrets[UPSTREAM_CA] = {
            "@type": _SDS_TYPE,
            "name": UPSTREAM_CA,
            "validation_context": {"trusted_ca": {"filename": cert}},
        }
    return secrets


def _sds(options: SidecarOptions, name: str) -> dict[str, Any]:
    path = f"{options.sds_dir.rstrip('/')}/{name}.yaml"
    return {
        "name": name,
        "sds_config": {"path_config_source": {"path": path}, "resource_api_version": "V3"},
    }


def tls_context(options: SidecarOptions, *, downstream: bool) -> dict[str, Any]:
    common: dict[str, Any] = {"tls_params": {"tls_minimum_protocol_version": "TLSv1_2"}}
    if downstream:
        common["alpn_protocols"] = ["h2", "http/1.1"]
        common["tls_certificate_sds_secret_configs"] = [_sds(options, SERVER_CERTIFICATE)]
        values: dict[str, Any] = {"common_tls_context": common}
        if options.tls_client_ca_file:
            common["validation_context_sds_secret_config"] = _sds(options, CLIENT_CA)
            values["require_client_certificate"] = True
        kind = "DownstreamTlsContext"
    else:
        common["alpn_protocols"] = ["h2"]  # gRPC
        if options.upstream_client_certificate:
            common["tls_certificate_sds_secret_configs"] = [_sds(options, SERVER_CERTIFICATE)]
        common["validation_context_sds_secret_config"] = _sds(options, UPSTREAM_CA)
        values = {"common_tls_context": common}
        kind = "UpstreamTlsContext"
    return {
        "name": _TLS_SOCKET,
        "typed_config": typed(f"transport_sockets.tls.v3.{kind}", **values),
    }
