"""The Envoy sidecar: REST/JSON and gRPC on one listener in front of the gateway.

`options` holds what a sidecar is configured with, `render` renders Envoy's configuration
from them (with `routes`, `filters`, `cluster` and `tls`, one part each), `descriptor`
prepares the descriptor set the transcoder reads, `process` runs Envoy. ``python -m
datamorph_gateway.sidecar`` writes both files for a deployment; envoy/README.md is the
operator's guide.
"""

from __future__ import annotations

from datamorph_gateway.sidecar.options import SidecarOptions, options_from_settings
from datamorph_gateway.sidecar.process import EnvoyError, EnvoyProcess, envoy_binary
from datamorph_gateway.sidecar.render import write_config

__all__ = [
    "EnvoyError",
    "EnvoyProcess",
    "SidecarOptions",
    "envoy_binary",
    "options_from_settings",
    "write_config",
]
