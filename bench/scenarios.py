"""The scenario matrix: what each system is asked, in each of its dialects.

One request body serves REST (through Envoy, and the Flask baseline's identical route)
and gRPC (parsed as proto3 JSON: Envoy keeps proto field names, so they are the same),
and the limit runs the same operation's SQL directly. A scenario a system cannot serve
(the baseline has no orchestrator) simply leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.data import ROW_TABLES, SCHEMA_TABLES

CONCURRENCIES = (1, 8, 64)
QUICK_CONCURRENCIES = (1, 8)

# Systems and the transports each is measured through.
GATEWAY_REST = ("gateway", "rest")  # REST/JSON through Envoy
GATEWAY_GRPC = ("gateway", "grpc")  # native gRPC, straight to the gateway
BASELINE_REST = ("baseline", "rest")  # Flask + gunicorn, REST/JSON
LIMIT_SQL = ("limit", "sql")  # psycopg2 over pooled connections
SYSTEMS = (GATEWAY_REST, GATEWAY_GRPC, BASELINE_REST, LIMIT_SQL)

WORKFLOW_QUERY = f"SELECT * FROM {ROW_TABLES[1_000]}"
WORKFLOW_TARGET_PREFIX = "bench_wf_"
LARGE_QUERY_TABLE = ROW_TABLES[100_000]


@dataclass(frozen=True)
class Scenario:
    """One kind of request, in the REST, gRPC and limit forms."""

    name: str
    title: str
    group: str
    rpc: str
    body: dict[str, Any] | None  # REST body and gRPC request (None: REST GET)
    rest_path: str
    limit_op: str
    limit_args: dict[str, Any] = field(default_factory=dict)
    systems: tuple[tuple[str, str], ...] = SYSTEMS
    table_rows: int | None = None  # GetData: the sampled table's size
    quick: bool = False  # part of --quick

    @property
    def rest_method(self) -> str:
        return "GET" if self.body is None else "POST"

    @property
    def grpc_request(self) -> dict[str, Any]:
        return self.body or {}


def _get_data(rows: int, label: str, *, quick: bool = False) -> Scenario:
    table = ROW_TABLES[rows]
    body = {"table_names": [table], "limit": 10}
    return Scenario(
        name=f"get_data_{label}",
        title=f"GetData: 10 rows of {rows:,}",
        group="get_data",
        rpc="GetData",
        body=body,
        rest_path="/get/data",
        limit_op="get_data",
        limit_args=body,
        table_rows=rows,
        quick=quick,
    )


def _get_schemas(count: int, *, quick: bool = False) -> Scenario:
    body = {"table_names": list(SCHEMA_TABLES[:count])}
    return Scenario(
        name=f"get_schemas_{count}",
        title=f"GetSchemas: {count} table{'s' if count > 1 else ''}",
        group="get_schemas",
        rpc="GetSchemas",
        body=body,
        rest_path="/get/schemas",
        limit_op="get_schemas",
        limit_args=body,
        quick=quick,
    )


def scenarios(*, with_1e7: bool = False) -> list[Scenario]:
    """Every throughput scenario, in the order they run and are reported."""
    small_query = {"query": f"SELECT * FROM {ROW_TABLES[1_000]} ORDER BY id LIMIT 10"}
    out = [
        Scenario(
            name="health",
            title="Health",
            group="health",
            rpc="Health",
            body=None,
            rest_path="/health",
            limit_op="health",
            quick=True,
        ),
        _get_schemas(1),
        _get_schemas(10, quick=True),
        _get_schemas(50),
        _get_data(1_000, "1e3"),
        _get_data(20_000, "2e4", quick=True),
        _get_data(100_000, "1e5"),
        _get_data(1_000_000, "1e6", quick=True),
    ]
    if with_1e7:
        out.append(_get_data(10_000_000, "1e7"))
    out += [
        Scenario(
            name="execute_query_small",
            title="ExecuteQuery: 10 rows",
            group="execute_query",
            rpc="ExecuteQuery",
            body=small_query,
            rest_path="/execute/query",
            limit_op="execute_query",
            limit_args=small_query,
            quick=True,
        ),
        Scenario(
            name="start_workflow",
            title="StartWorkflow: materialize 1,000 rows (local orchestrator)",
            group="start_workflow",
            rpc="StartWorkflow",
            body={
                "prompt": WORKFLOW_QUERY,
                "target_table": WORKFLOW_TARGET_PREFIX + "{n}",
            },
            rest_path="/start",
            limit_op="materialize",
            limit_args={
                "query": WORKFLOW_QUERY,
                "target_table": WORKFLOW_TARGET_PREFIX + "limit_{n}",
            },
            # The baseline's /start invokes an AWS Lambda, which does not exist here.
            systems=(GATEWAY_REST, GATEWAY_GRPC, LIMIT_SQL),
            quick=True,
        ),
    ]
    return out
