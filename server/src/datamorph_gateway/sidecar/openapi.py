"""The REST API as an OpenAPI 3.1 document, generated from the descriptor set `make proto` writes.

Everything comes from ``envoy/gateway.binpb`` (read with ``descriptor_pb2``, never from the
.proto text): the routes from the ``google.api.http`` rules, the schemas from the messages
and enums, the descriptions from the proto comments (the set keeps source info). The
schemas say what the transcoder puts on the wire, following the proto3 JSON mapping as
filters.PRINT_OPTIONS configures it: proto field names (``preserve_proto_field_names``),
fields without presence always printed (so they are ``required`` in answers), enums as
their names, 64-bit integers as strings, the well-known types as their JSON forms.

Every error answer is a ``google.rpc.Status`` with ``"status": "error"`` (the transcoder's
and Envoy's own, see replies.py); server streams are newline-delimited JSON, one message per
line. `make proto` writes docs/openapi.yaml (``python -m datamorph_gateway.sidecar --openapi``);
render.write_config writes the same document as ``openapi.json`` next to Envoy's config,
which serves it at ``GET /openapi.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from datamorph_gateway import __version__
from datamorph_gateway.sidecar.descriptor import SERVICE
from datamorph_gateway.sidecar.filters import PRINT_OPTIONS

__all__ = [
    "ERROR_STATUSES",
    "OPENAPI_FILE",
    "OPENAPI_PATH",
    "openapi_document",
    "openapi_json",
    "openapi_yaml",
]

OPENAPI_FILE = "openapi.json"
OPENAPI_PATH = "/openapi.json"
_VERBS = ("get", "put", "post", "delete", "patch")
_F = descriptor_pb2.FieldDescriptorProto

# HTTP status → what answers it, from the contract's gRPC → HTTP mapping and Envoy's own
# replies (envoy/README.md, "What clients see").
ERROR_STATUSES: dict[int, str] = {
    400: "INVALID_ARGUMENT or FAILED_PRECONDITION; malformed JSON, an unknown query parameter",
    401: "UNAUTHENTICATED: no credentials, or unknown ones",
    403: "PERMISSION_DENIED: the caller may not do this (the auth policy, the SQL policy, "
    "a system schema)",
    404: "NOT_FOUND: no such table or run",
    409: "ALREADY_EXISTS or ABORTED (a workflow's target table exists, an idempotency key "
    "is in use)",
    413: "the request body is over Envoy's REST limit",
    415: "a POST body whose content type is not application/json",
    429: "RESOURCE_EXHAUSTED: a rate, pool or concurrency limit (google.rpc.RetryInfo in "
    "details when retrying later helps)",
    431: "the request headers are over Envoy's limit",
    500: "INTERNAL: a bug, or an answer over Envoy's REST response limit",
    501: "UNIMPLEMENTED",
    502: "the answer could not be transcoded (JSON nested deeper than Envoy's parser allows)",
    503: "UNAVAILABLE: the database or the gateways are unavailable, or at capacity",
    504: "DEADLINE_EXCEEDED: the statement timeout, or Envoy's route timeout",
}
_POST_ONLY = (413, 415)

# Int types the JSON mapping prints as strings (64-bit) or numbers.
_INT64 = {_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64, _F.TYPE_UINT64, _F.TYPE_FIXED64}
_INT32 = {_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32, _F.TYPE_UINT32, _F.TYPE_FIXED32}
_UNSIGNED = {_F.TYPE_UINT32, _F.TYPE_FIXED32, _F.TYPE_UINT64, _F.TYPE_FIXED64}
_NON_FINITE = ["NaN", "Infinity", "-Infinity"]

# Well-known types, as the proto3 JSON mapping writes them.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Struct": {"type": "object", "description": "Any JSON object."},
    ".google.protobuf.Value": {"description": "Any JSON value, null included."},
    ".google.protobuf.ListValue": {"type": "array", "description": "Any JSON array."},
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    ".google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    ".google.protobuf.StringValue": {"type": ["string", "null"]},
    ".google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    ".google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "int32"},
    ".google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    ".google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "int64"},
    ".google.protobuf.FloatValue": {"type": ["number", "string", "null"]},
    ".google.protobuf.DoubleValue": {"type": ["number", "string", "null"]},
}

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'google.rpc.Status: the gRPC status of a failed call, with `"status": '
    '"error"` for callers written for the Flask gateway, which read `status` on every answer. '
    "Envoy's own answers (no such route, a wrong method, a body over the limit, the gateway "
    "unreachable) have the same shape, with empty `details`.",
    "properties": {
        "status": {"const": "error", "description": 'Always "error".'},
        "code": {
            "type": "integer",
            "format": "int32",
            "description": "The google.rpc.Code (3 INVALID_ARGUMENT, 5 NOT_FOUND, ...).",
        },
        "message": {"type": "string", "description": "What went wrong, for people."},
        "details": {
            "type": "array",
            "description": "google.rpc details: ErrorInfo (reason, domain and metadata such "
            "as request_id and sqlstate), BadRequest (field violations), RetryInfo, ...",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "required": ["@type"],
            },
        },
    },
    "required": ["status", "code", "message", "details"],
}

_SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "An API key the auth policy lists by its sha256 (docs/security.md).",
    },
    "bearerJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An OAuth 2 / OIDC access token checked against the policy's jwt: section.",
    },
    "awsIam": {
        "type": "apiKey",
        "in": "header",
        "name": "x-datamorph-aws-iam",
        "description": "A presigned sts:GetCallerIdentity request (Vault-style), for the "
        "policy's aws_iam: section; datamorph_client.aws_iam.iam_token makes one.",
    },
    "mutualTLS": {
        "type": "mutualTLS",
        "description": "A client certificate from TLS_CLIENT_CA_FILE's CA, named by the "
        "policy's tls_subjects.",
    },
}
# Any one of them; none while the gateway runs without a policy (loopback only).
_NO_CREDENTIALS: dict[str, list[str]] = {}
_SECURITY = [*({name: []} for name in _SECURITY_SCHEMES), _NO_CREDENTIALS]


class _Comments:
    """The leading comments of a file's elements, by their source path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {
            tuple(location.path): location for location in file.source_code_info.location
        }

    def __call__(self, *path: int) -> str:
        location = self._by_path.get(path)
        return _prose(location.leading_comments) if location is not None else ""

    def detached(self, *path: int) -> str:
        location = self._by_path.get(path)
        if location is None or not location.leading_detached_comments:
            return ""
        return _prose(location.leading_detached_comments[0])


def _prose(comment: str) -> str:
    """A comment's text as paragraphs: lines joined, blank lines kept."""
    paragraphs = re.split(r"\n\s*\n", comment.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


class _Types:
    """Every message and enum of the set by full name (``.pkg.Name``), with its comments."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, _Comments, tuple[int, ...]]]
        self.messages = {}
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, _Comments, tuple[int, ...]]]
        self.enums = {}
        for file in files.file:
            comments = _Comments(file)
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(message, prefix, comments, (4, i))
            for i, enum in enumerate(file.enum_type):
                self.enums[f"{prefix}.{enum.name}"] = (enum, comments, (5, i))

    def _add_message(
        self,
        message: descriptor_pb2.DescriptorProto,
        prefix: str,
        comments: _Comments,
        path: tuple[int, ...],
    ) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = (message, comments, path)
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, name, comments, (*path, 3, i))
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (enum, comments, (*path, 4, i))


def _ref(full_name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{full_name.lstrip('.')}"}


class _Builder:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.types = _Types(files)
        self.schemas: dict[str, Any] = {}
        self.proto_names = bool(PRINT_OPTIONS.get("preserve_proto_field_names"))
        self.always_print = bool(PRINT_OPTIONS.get("always_print_primitive_fields"))

    def _json_name(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        return field.name if self.proto_names else field.json_name

    def _scalar(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        kind = field.type
        if kind == _F.TYPE_STRING:
            return {"type": "string"}
        if kind == _F.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == _F.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if kind in _INT32:
            schema: dict[str, Any] = {"type": "integer", "format": "int32"}
            if kind in _UNSIGNED:
                schema["minimum"] = 0
            return schema
        if kind in _INT64:
            # A decimal string on the wire (the transcoder takes a number too).
            return {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
        if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
            return {
                "oneOf": [{"type": "number"}, {"type": "string", "enum": _NON_FINITE}],
                "format": "double" if kind == _F.TYPE_DOUBLE else "float",
            }
        raise ValueError(f"field {field.name}: unsupported type {kind}")

    def _value(
        self, field: descriptor_pb2.FieldDescriptorProto, *, output: bool = True
    ) -> dict[str, Any]:
        """The schema of one value of `field` (an element, for a repeated field)."""
        if field.type == _F.TYPE_ENUM:
            self._enum(field.type_name)
            return _ref(field.type_name)
        if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            if field.type_name in _WELL_KNOWN:
                return dict(_WELL_KNOWN[field.type_name])
            self.message(field.type_name, output=output)
            return _ref(field.type_name)
        return self._scalar(field)

    def _map_entry(self, field: descriptor_pb2.FieldDescriptorProto) -> Any:
        if field.type != _F.TYPE_MESSAGE or field.label != _F.LABEL_REPEATED:
            return None
        entry = self.types.messages.get(field.type_name)
        if entry is None or not entry[0].options.map_entry:
            return None
        return entry[0]

    def _enum(self, full_name: str) -> None:
        key = full_name.lstrip(".")
        if key in self.schemas:
            return
        enum, comments, path = self.types.enums[full_name]
        values = [value.name for value in enum.value]
        lines = [comments(*path)] + [
            f"- `{value.name}`: {comments(*path, 2, i)}" for i, value in enumerate(enum.value)
        ]
        self.schemas[key] = {
            "type": "string",
            "enum": values,
            "description": "\n".join(line for line in lines if line),
        }

    def message(self, full_name: str, *, output: bool) -> None:
        """Add the schema of message `full_name` (and of every type it uses).

        In an answer (`output`), fields without presence are always printed, so required;
        in a request nothing is required on the wire (the gateway checks what it needs).
        """
        key = full_name.lstrip(".")
        if key in self.schemas:
            return
        message, comments, path = self.types.messages[full_name]
        self.schemas[key] = {}  # placeholder: recursive messages stop here
        properties: dict[str, Any] = {}
        required: list[str] = []
        for i, field in enumerate(message.field):
            name = self._json_name(field)
            entry = self._map_entry(field)
            if entry is not None:
                schema: dict[str, Any] = {
                    "type": "object",
                    "additionalProperties": self._value(entry.field[1], output=output),
                }
            elif field.label == _F.LABEL_REPEATED:
                schema = {"type": "array", "items": self._value(field, output=output)}
            else:
                schema = self._value(field, output=output)
            description = comments(*path, 2, i)
            if description:
                if "$ref" in schema:
                    schema = {"allOf": [schema]}
                schema["description"] = description
            properties[name] = schema
            has_presence = (
                field.HasField("oneof_index")
                or field.proto3_optional
                or (field.type == _F.TYPE_MESSAGE and field.label != _F.LABEL_REPEATED)
            )
            if output and self.always_print and not has_presence:
                required.append(name)
        schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        description = comments(*path)
        if description:
            schema["description"] = description
        self.schemas[key] = schema


def _service(files: descriptor_pb2.FileDescriptorSet, service: str) -> tuple[Any, Any, _Comments]:
    package, _, name = service.rpartition(".")
    for file in files.file:
        if file.package != package:
            continue
        for i, svc in enumerate(file.service):
            if svc.name == name:
                return file, (svc, i), _Comments(file)
    raise ValueError(f"the descriptor set has no service {service}")


def _bindings(method: descriptor_pb2.MethodDescriptorProto) -> Iterator[tuple[str, str, str]]:
    """(verb, path template, body) of each ``google.api.http`` binding of `method`."""
    rule = method.options.Extensions[annotations_pb2.http]
    for binding in (rule, *rule.additional_bindings):
        verb = binding.WhichOneof("pattern")
        if verb in _VERBS:
            yield verb, getattr(binding, verb), binding.body


def _errors(verb: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in ERROR_STATUSES:
        if status in _POST_ONLY and verb != "post":
            continue
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    return responses


def _path_fields(template: str) -> list[str]:
    """The variables of a path template: ``/get/logs/{run_id}`` → ``["run_id"]``."""
    names = []
    for segment in template.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            names.append(segment[1:-1].split("=")[0])
    return names


def _openapi_path(template: str) -> str:
    return "/".join(
        "{" + s[1:-1].split("=")[0] + "}" if s.startswith("{") and s.endswith("}") else s
        for s in template.split("/")
    )


def _operation(
    builder: _Builder,
    method: descriptor_pb2.MethodDescriptorProto,
    description: str,
    verb: str,
    template: str,
    body: str,
) -> dict[str, Any]:
    request, request_comments, request_path = builder.types.messages[method.input_type]
    builder.message(method.input_type, output=False)
    builder.message(method.output_type, output=True)
    bound = set(_path_fields(template))
    parameters: list[dict[str, Any]] = []
    for i, field in enumerate(request.field):
        if field.name in bound:
            location = "path"
        elif not body and field.label != _F.LABEL_REPEATED and field.type != _F.TYPE_MESSAGE:
            location = "query"  # GET: the fields the path leaves, as query parameters
        else:
            continue
        parameter: dict[str, Any] = {
            "name": builder._json_name(field),
            "in": location,
            "required": location == "path",
            "schema": builder._value(field, output=False),
        }
        text = request_comments(*request_path, 2, i)
        if text:
            parameter["description"] = text
        parameters.append(parameter)
    summary = f"{method.name} ({SERVICE}/{method.name})"
    operation: dict[str, Any] = {
        "operationId": method.name,
        "summary": summary,
        "description": description,
        "tags": [SERVICE.rpartition(".")[2]],
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        if body != "*":
            raise ValueError(f'{method.name}: only body: "*" is supported, got {body!r}')
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(method.input_type)}},
        }
    output = _ref(method.output_type)
    if method.server_streaming:
        ok = {
            "description": "Newline-delimited JSON (NDJSON): one "
            f"{method.output_type.rpartition('.')[2]} object per line, each sent as the "
            "gateway sends it. The content type says application/json, as Envoy's transcoder "
            "sends it; read the body line by line. An error before the first line is a "
            "google.rpc.Status answer with its own HTTP status; an error after it ends the "
            "stream (the HTTP status is already 200).",
            "content": {"application/json": {"schema": output}},
            "x-datamorph-stream": "ndjson",
        }
    else:
        ok = {"description": "Success.", "content": {"application/json": {"schema": output}}}
    operation["responses"] = {"200": ok, **_errors(verb)}
    if method.name == "Health":
        # Open to everyone; the unhealthy answer is the HealthResponse itself (the Lua
        # filter in health.py lifts it out of the status details).
        operation["security"] = []
        operation["responses"]["503"] = {
            "description": 'Unhealthy: the same HealthResponse, with "status": "unhealthy".',
            "content": {"application/json": {"schema": output}},
        }
        for status in ("401", "403", "429"):
            operation["responses"].pop(status, None)
    return operation


def openapi_document(descriptor_set: Path | bytes, service: str = SERVICE) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `service`'s REST routes."""
    data = descriptor_set if isinstance(descriptor_set, bytes) else descriptor_set.read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    builder = _Builder(files)
    file, (svc, index), comments = _service(files, service)
    paths: dict[str, dict[str, Any]] = {}
    for m, method in enumerate(svc.method):
        description = comments(6, index, 2, m)
        for verb, template, body in _bindings(method):
            item = paths.setdefault(_openapi_path(template), {})
            item[verb] = _operation(builder, method, description, verb, template, body)
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "GetOpenApi",
            "summary": "This document, as JSON (served by Envoy itself)",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **{
                    status: {"$ref": f"#/components/responses/Error{status}"}
                    for status in ("404", "431", "503")
                },
            },
        }
    }
    overview = comments.detached(12) or comments(12)
    info = {
        "title": "DataMorph Gateway REST API",
        "version": __version__,
        "summary": "REST/JSON routes of datamorph.gateway.v1, transcoded to gRPC by Envoy.",
        "description": "\n\n".join(
            text
            for text in (
                overview,
                comments(6, index),
                "Generated by `make proto` from proto/datamorph/gateway/v1/gateway.proto; "
                "do not edit. JSON field names are the proto names (snake_case), fields "
                "without presence are always printed, enums are printed as their names, "
                "and 64-bit integers as decimal strings (the proto3 JSON mapping). Every "
                'success body has `"status": "success"` (Health: healthy or '
                "unhealthy); every error body is a google.rpc.Status with "
                '`"status": "error"`. Values from PostgreSQL are encoded as '
                "shared/CONTRACT.md's value table says (docs/api.md).",
            )
            if text
        ),
    }
    responses = {
        f"Error{status}": {
            "description": meaning,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}},
        }
        for status, meaning in ERROR_STATUSES.items()
    }
    del file
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": "http://127.0.0.1:8080", "description": "make run"}],
        "security": _SECURITY,
        "paths": paths,
        "components": {
            "schemas": {**dict(sorted(builder.schemas.items())), "Status": _STATUS_SCHEMA},
            "responses": responses,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


def openapi_json(descriptor_set: Path | bytes) -> bytes:
    """The document as compact JSON, as Envoy serves it."""
    text = json.dumps(openapi_document(descriptor_set), separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def openapi_yaml(descriptor_set: Path | bytes) -> str:
    """The document as YAML, as docs/openapi.yaml holds it."""
    header = (
        "# Generated by `make proto` from proto/datamorph/gateway/v1/gateway.proto "
        "(python -m datamorph_gateway.sidecar --openapi).\n# Do not edit: Envoy serves the same "
        "document at GET /openapi.json.\n"
    )
    body: str = yaml.safe_dump(
        openapi_document(descriptor_set), sort_keys=False, allow_unicode=True, width=100
    )
    return header + body
