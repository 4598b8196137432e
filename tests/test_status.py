"""Domain errors to gRPC statuses: one table, and gRPC kept out of the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc

from datamorph_gateway import errors
from datamorph_gateway.errors import KIND_NAMES, NotFound, QueryError
from datamorph_gateway.status import STATUS_CODES, status_code
from datamorph_gateway.workflows import WorkflowError

PACKAGE = Path(errors.__file__).parent


def test_each_kind_records_the_name_of_the_code_it_answers() -> None:
    """Run logs and the idempotency ledger record ``kind_name``: the code the caller got."""
    assert {kind: code.name for kind, code in STATUS_CODES.items()} == KIND_NAMES


def test_a_given_kind_answers_its_code_without_being_that_kind() -> None:
    refused = QueryError("relation does not exist", kind=NotFound, sqlstate="42P01")
    failed = WorkflowError("the orchestrator answered 404", kind=NotFound)
    for error in (refused, failed):
        assert status_code(error) == grpc.StatusCode.NOT_FOUND
        assert error.kind_name == "NOT_FOUND"
        assert not isinstance(error, NotFound)  # `except NotFound` is the gateway's own


def test_below_the_rpc_layer_nothing_imports_grpc_or_protobuf() -> None:
    below = [PACKAGE / "errors.py"] + [
        path
        for package in ("db", "logstore", "workflows")
        for path in sorted((PACKAGE / package).rglob("*.py"))
    ]
    assert PACKAGE / "db" / "decoding" / "rows.py" in below
    for path in below:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("grpc", "google.")), (path, name)
                assert not name.startswith("datamorph.gateway"), (path, name)
