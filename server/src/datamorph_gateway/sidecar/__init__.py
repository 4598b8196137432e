"""The Envoy sidecar: REST/JSON and gRPC on one listener in front of the gateway.

`config` renders Envoy's configuration from a few parameters, `descriptor` prepares the
descriptor set the transcoder reads, `process` runs Envoy. ``python -m
datamorph_gateway.sidecar`` writes both files for a deployment; envoy/README.md is the
operator's guide.
"""

from __future__ import annotations

from datamorph_gateway.sidecar.config import SidecarOptions, options_from_settings, write_config
from datamorph_gateway.sidecar.process import EnvoyError, EnvoyProcess, envoy_binary

__all__ = [
    "EnvoyError",
    "EnvoyProcess",
    "SidecarOptions",
    "envoy_binary",
    "options_from_settings",
    "write_config",
]
