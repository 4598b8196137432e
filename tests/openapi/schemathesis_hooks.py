"""Schemathesis hooks for the fuzz run (SCHEMATHESIS_HOOKS names this module).

The streaming routes answer newline-delimited JSON under ``application/json`` (as Envoy's
transcoder sends it, and as the document says): a body of several lines is not one JSON
value. The deserializer hands Schemathesis's own checks the last line, and the check below
holds every line to the operation's documented schema.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import schemathesis
from schemathesis import CheckContext, DeserializationContext, Response
from schemathesis.generation.case import Case


def _lines(response: Response) -> list[Any]:
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]


@schemathesis.deserializer("application/json")
def ndjson_or_json(ctx: DeserializationContext, response: Response) -> Any:
    """One JSON value, or the last line of a newline-delimited stream."""
    lines = _lines(response)
    if len(lines) == 1:
        return lines[0]
    if not lines:
        return json.loads(response.content)  # raises: an empty body is not JSON
    return lines[-1]


@schemathesis.check
def every_ndjson_line_conforms(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """Each line of a streamed 200 conforms to the documented message schema."""
    definition = case.operation.definition.raw
    ok = definition.get("responses", {}).get("200", {})
    if response.status_code != 200 or ok.get("x-datamorph-stream") != "ndjson":
        return None
    root = case.operation.schema.raw_schema
    schema = {**ok["content"]["application/json"]["schema"], "components": root["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    for number, line in enumerate(_lines(response), 1):
        errors = sorted(validator.iter_errors(line), key=str)
        if errors:
            raise AssertionError(f"line {number} of the stream does not conform: {errors[0]}")
    return True
