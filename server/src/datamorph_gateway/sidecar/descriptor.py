"""The descriptor set Envoy's transcoder loads, and the REST routes it implies.

`make proto` writes ``envoy/gateway.binpb``: the gateway's proto with its imports. That is
enough to transcode requests and successful responses, but not errors: with
``convert_grpc_status`` Envoy prints the ``google.rpc.Status`` from the
``grpc-status-details-bin`` trailer as JSON, and a status whose details it cannot resolve
(our ``google.rpc.ErrorInfo`` and ``BadRequest``) is left unconverted, answering an empty
body. So the transcoder gets the set plus ``google/rpc/status.proto`` and
``google/rpc/error_details.proto`` (taken from googleapis-common-protos, which the gateway
itself uses to build those details), without source info, which Envoy does not need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor, descriptor_pb2
from google.rpc import error_details_pb2, status_pb2

__all__ = ["SERVICE", "HttpRoute", "http_routes", "transcoder_descriptor"]

SERVICE = "datamorph.gateway.v1.DataMorphGateway"

# Files every error body may need, besides what the gateway's proto imports.
_STATUS_FILES = (status_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR)
_VERBS = ("get", "put", "post", "delete", "patch")
_SEGMENTS = {"*": "[^/?]+", "**": "[^?]*"}


@dataclass(frozen=True)
class HttpRoute:
    """One REST binding of an RPC: ``POST /get/schemas`` → ``GetSchemas``."""

    method: str
    template: str
    rpc: str

    @property
    def path_regex(self) -> str:
        """An RE2 regex for the ``:path`` values (query string included) the template matches.

        Variables (``{run_id}``, ``{name=*}``, ``{name=**}``) and wildcards become what they
        match: one segment, or any number of them.
        """
        expanded = re.sub(r"\{[^}=]*(?:=([^}]*))?\}", lambda m: m.group(1) or "*", self.template)
        segments = [_SEGMENTS.get(s) or re.escape(s) for s in expanded.split("/")]
        return "^" + "/".join(segments) + r"(\?.*)?$"


def _load(path: Path) -> descriptor_pb2.FileDescriptorSet:
    try:
        return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot read the descriptor set {path} (run `make proto`): {exc}"
        ) from exc


def transcoder_descriptor(source: Path) -> bytes:
    """The serialized descriptor set for the transcoder, built from `make proto`'s set."""
    files = _load(source)
    have = {f.name for f in files.file}

    def add(file: descriptor.FileDescriptor) -> None:
        for dependency in file.dependencies:
            add(dependency)
        if file.name not in have:
            proto = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(proto)
            files.file.append(proto)
            have.add(file.name)

    for file in _STATUS_FILES:
        add(file)
    for proto in files.file:
        proto.ClearField("source_code_info")
    return files.SerializeToString(deterministic=True)


def http_routes(source: Path, service: str = SERVICE) -> list[HttpRoute]:
    """The ``google.api.http`` bindings of `service`'s RPCs, in declaration order."""
    package, _, name = service.rpartition(".")
    routes: list[HttpRoute] = []
    for file in _load(source).file:
        if file.package != package:
            continue
        for svc in file.service:
            if svc.name != name:
                continue
            for method in svc.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    verb = binding.WhichOneof("pattern")
                    if verb in _VERBS:
                        template = getattr(binding, verb)
                        routes.append(HttpRoute(verb.upper(), template, method.name))
    if not routes:
        raise ValueError(f"{source} has no google.api.http rules for {service}")
    return routes
