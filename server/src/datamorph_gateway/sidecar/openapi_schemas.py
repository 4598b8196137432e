"""The JSON Schemas of the proto's messages and enums, as the transcoder prints them
(``openapi`` puts them in the document's ``components``).

The proto3 JSON mapping as filters.PRINT_OPTIONS configures it: proto field names
(``preserve_proto_field_names``), fields without presence always printed (so they are
``required`` in answers), enums as their names, 64-bit integers as strings, the well-known
types as their JSON forms; descriptions from the proto comments.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import descriptor_pb2

from datamorph_gateway.sidecar.filters import PRINT_OPTIONS

__all__ = ["Builder", "Comments", "ref"]

_F = descriptor_pb2.FieldDescriptorProto

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


class Comments:
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
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, Comments, tuple[int, ...]]]
        self.messages = {}
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, Comments, tuple[int, ...]]]
        self.enums = {}
        for file in files.file:
            comments = Comments(file)
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(message, prefix, comments, (4, i))
            for i, enum in enumerate(file.enum_type):
                self.enums[f"{prefix}.{enum.name}"] = (enum, comments, (5, i))

    def _add_message(
        self,
        message: descriptor_pb2.DescriptorProto,
        prefix: str,
        comments: Comments,
        path: tuple[int, ...],
    ) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = (message, comments, path)
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, name, comments, (*path, 3, i))
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (enum, comments, (*path, 4, i))


def ref(full_name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{full_name.lstrip('.')}"}


class Builder:
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
            return ref(field.type_name)
        if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            if field.type_name in _WELL_KNOWN:
                return dict(_WELL_KNOWN[field.type_name])
            self.message(field.type_name, output=output)
            return ref(field.type_name)
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
