"""Small pieces every part of Envoy's configuration is built from."""

from __future__ import annotations

from typing import Any

__all__ = ["address", "duration", "extension", "typed"]

_EXT = "type.googleapis.com/envoy.extensions"


def duration(seconds: float) -> str:
    """A protobuf Duration as Envoy's YAML takes it: ``1.5s``."""
    return f"{seconds:g}s"


def address(host: str, port: int) -> dict[str, Any]:
    """A socket address."""
    return {"socket_address": {"address": host, "port_value": port}}


def typed(type_name: str, **values: Any) -> dict[str, Any]:
    """A typed config of one of Envoy's extensions, ``type_name`` below ``envoy.extensions``."""
    return {"@type": f"{_EXT}.{type_name}", **values}


def extension(name: str, type_name: str, **values: Any) -> dict[str, Any]:
    """A named extension (a filter, an access logger, a resource monitor) and its config."""
    return {"name": name, "typed_config": typed(type_name, **values)}
