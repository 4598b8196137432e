"""Workflow logs: DynamoDB items as DataMorph writes them (moto server), PostgreSQL, following."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg2
import pytest

from datamorph_gateway.config import Settings, WorkflowSettings, load_settings
from datamorph_gateway.db.pool import ConnectionPool
from datamorph_gateway.errors import ConfigError, FailedPrecondition, InvalidArgument, NotFound
from datamorph_gateway.logstore import (
    DynamoDBLogStore,
    LogStore,
    PostgresLogStore,
    create_log_store,
    log_store_kind,
    make_entry,
)

from ..fixtures.roles import own_tables_dsn

ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def run_id() -> str:
    return f"20250113_123456_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    p = ConnectionPool(own_tables_dsn(database_url), max_size=6)
    yield p
    p.close()


@pytest.fixture
def pg_store(pool: ConnectionPool) -> PostgresLogStore:
    store = PostgresLogStore(pool, poll_interval_s=0.05)
    store.ensure_schema()
    return store


@pytest.fixture
def dynamo_settings(moto_url: str, dynamodb_table: str) -> Settings:
    return Settings.from_flat(
        dynamodb_endpoint_url=moto_url,
        dynamodb_table=dynamodb_table,
        log_poll_interval_s=0.05,
        aws_timeout_s=5,
    )


@pytest.fixture
def dynamo_store(
    dynamo_settings: Settings, aws_session: boto3.session.Session
) -> Iterator[DynamoDBLogStore]:
    store = DynamoDBLogStore.from_settings(
        dynamo_settings.workflows, dynamo_settings.aws, session=aws_session
    )
    yield store
    store.close()


@pytest.fixture
def dynamo_client(moto_url: str, aws_session: boto3.session.Session) -> Iterator[Any]:
    client = aws_session.client("dynamodb", endpoint_url=moto_url)
    yield client
    client.close()


# -- DynamoDB: DataMorph's item format ----------------------------------------------------

DATAMORPH_ITEM_LOGS = {
    "L": [
        {
            "M": {
                "timestamp": {"S": "2025-01-13T12:34:56.789Z"},
                "type": {"S": "start"},
                "title": {"S": "Starting Orchestrator"},
                "description": {"S": "Starting ETL workflow"},
                "metadata": {"M": {}},
            }
        },
        {
            "M": {
                "timestamp": {"S": "2025-01-13T12:35:10.123Z"},
                "type": {"S": "result"},
                "title": {"S": "Specifications Generated Successfully"},
                "description": {"S": "ETL specifications created and stored in S3"},
                "metadata": {
                    "M": {
                        "s3_path": {"S": "s3://dmbckt/specs/x_specs.json"},
                        "source_tables": {"L": [{"S": "customers"}, {"S": "orders"}]},
                        "code_size_bytes": {"N": "2048"},
                        "hundred": {"N": "1E+2"},
                        "ratio": {"N": "0.25"},
                        "negative": {"N": "-3"},
                        "passed": {"BOOL": True},
                        "failed": {"BOOL": False},
                        "remediation": {"NULL": True},
                        "nested": {
                            "M": {
                                "tests": {
                                    "L": [
                                        {"M": {"name": {"S": "row_count"}, "ok": {"BOOL": True}}},
                                        {"N": "1.5"},
                                        {"NULL": True},
                                        {"L": []},
                                    ]
                                }
                            }
                        },
                    }
                },
            }
        },
    ]
}


def put_datamorph_item(client: Any, table: str, rid: str) -> None:
    client.put_item(
        TableName=table,
        Item={
            "run_id": {"S": rid},
            "logs": DATAMORPH_ITEM_LOGS,
            "created_at": {"S": "2025-01-13T12:34:56.789Z"},
            "updated_at": {"S": "2025-01-13T12:35:10.123Z"},
        },
    )


def test_dynamodb_item_decodes_to_plain_json(
    dynamo_store: DynamoDBLogStore, dynamo_client: Any, dynamodb_table: str
) -> None:
    rid = run_id()
    put_datamorph_item(dynamo_client, dynamodb_table, rid)
    got = dynamo_store.get(rid)
    assert got is not None
    assert (got.run_id, got.created_at, got.updated_at) == (
        rid,
        "2025-01-13T12:34:56.789Z",
        "2025-01-13T12:35:10.123Z",
    )
    assert [e["type"] for e in got.logs] == ["start", "result"]
    assert got.logs[0] == {
        "timestamp": "2025-01-13T12:34:56.789Z",
        "type": "start",
        "title": "Starting Orchestrator",
        "description": "Starting ETL workflow",
        "metadata": {},
    }
    meta = got.logs[1]["metadata"]
    assert meta == {
        "s3_path": "s3://dmbckt/specs/x_specs.json",
        "source_tables": ["customers", "orders"],
        "code_size_bytes": 2048,
        "hundred": 100,
        "ratio": 0.25,
        "negative": -3,
        "passed": True,
        "failed": False,
        "remediation": None,
        "nested": {"tests": [{"name": "row_count", "ok": True}, 1.5, None, []]},
    }
    # Integral numbers are ints, not floats and not Decimals.
    assert type(meta["code_size_bytes"]) is int
    assert type(meta["hundred"]) is int
    assert type(meta["ratio"]) is float
    assert got.to_dict()["log_count"] == 2


def test_dynamodb_missing_run(dynamo_store: DynamoDBLogStore) -> None:
    assert dynamo_store.get(run_id()) is None
    with pytest.raises(NotFound, match="no logs for run"):
        dynamo_store.require(run_id())


def test_dynamodb_odd_entries_keep_what_they_carry(
    dynamo_store: DynamoDBLogStore, dynamo_client: Any, dynamodb_table: str
) -> None:
    """Entries missing fields, with extra keys, or not maps at all still answer all five fields."""
    rid = run_id()
    dynamo_client.put_item(
        TableName=dynamodb_table,
        Item={
            "run_id": {"S": rid},
            "logs": {
                "L": [
                    {"M": {"type": {"S": "info"}, "agent": {"S": "validator"}}},
                    {"S": "a bare string"},
                    {"M": {"type": {"S": "code"}, "metadata": {"L": [{"N": "1"}]}}},
                ]
            },
        },
    )
    got = dynamo_store.get(rid)
    assert got is not None
    assert got.created_at == got.updated_at == ""
    first, second, third = got.logs
    assert first == {
        "timestamp": "",
        "type": "info",
        "title": "",
        "description": "",
        "metadata": {"agent": "validator"},
    }
    assert second["description"] == "a bare string"
    assert third["metadata"] == {"value": [1]}


def test_dynamodb_append_interleaves_with_datamorph_writes(
    dynamo_store: DynamoDBLogStore, dynamo_client: Any, dynamodb_table: str
) -> None:
    rid = run_id()
    put_datamorph_item(dynamo_client, dynamodb_table, rid)
    dynamo_store.append(rid, make_entry("info", "From the gateway", "hi", {"n": 2, "x": 0.5}))
    got = dynamo_store.get(rid)
    assert got is not None
    assert [e["type"] for e in got.logs] == ["start", "result", "info"]
    assert got.logs[2]["metadata"] == {"n": 2, "x": 0.5}
    assert got.created_at == "2025-01-13T12:34:56.789Z"
    assert got.updated_at == got.logs[2]["timestamp"]

    fresh = run_id()
    dynamo_store.append(fresh, {"type": "start", "title": "t", "description": "d"})
    created = dynamo_store.get(fresh)
    assert created is not None
    assert ISO_MILLIS.match(created.created_at)
    assert created.logs[0]["metadata"] == {}
    assert ISO_MILLIS.match(created.logs[0]["timestamp"])


def test_dynamodb_missing_table_is_a_configuration_problem(
    dynamo_settings: Settings, aws_session: boto3.session.Session
) -> None:
    settings = dynamo_settings.with_flat(dynamodb_table="no_such_table")
    store = DynamoDBLogStore.from_settings(settings.workflows, settings.aws, session=aws_session)
    try:
        with pytest.raises(FailedPrecondition, match=r"'no_such_table'.*DYNAMODB_TABLE") as err:
            store.get(run_id())
        assert err.value.reason == "LOG_STORE_MISCONFIGURED"
    finally:
        store.close()


def test_dynamodb_logs_are_followed_by_polling(
    dynamo_store: DynamoDBLogStore, dynamo_client: Any, dynamodb_table: str
) -> None:
    """DataMorph's Lambdas write behind the gateway's back: following re-reads the item."""
    rid = run_id()
    dynamo_client.put_item(
        TableName=dynamodb_table,
        Item={"run_id": {"S": rid}, "logs": {"L": [DATAMORPH_ITEM_LOGS["L"][0]]}},
    )

    def lambda_writes_later() -> None:
        time.sleep(0.2)
        dynamo_client.update_item(
            TableName=dynamodb_table,
            Key={"run_id": {"S": rid}},
            UpdateExpression="SET logs = list_append(logs, :new)",
            ExpressionAttributeValues={
                ":new": {"L": [{"M": {"type": {"S": "end"}, "title": {"S": "Completed"}}}]}
            },
        )

    writer = threading.Thread(target=lambda_writes_later)
    writer.start()
    try:
        events = list(dynamo_store.follow(rid, timeout_s=20))
    finally:
        writer.join()
    assert [(e.index, e.entry["type"]) for e in events] == [(0, "start"), (1, "end")]


# -- PostgreSQL -----------------------------------------------------------------------------


def test_postgres_round_trip(pg_store: PostgresLogStore) -> None:
    rid = run_id()
    assert pg_store.get(rid) is None
    metadata = {
        "nested": {"list": [1, 2.5, None, True, {"deep": "é✓"}]},
        "nan": float("nan"),
        "big": 2**60,
        "tuple": (1, 2),
    }
    pg_store.append(rid, make_entry("start", "Starting", "first", metadata))
    pg_store.append(rid, {"type": "end", "title": "Done", "description": "last", "extra": 1})
    got = pg_store.get(rid)
    assert got is not None
    assert [e["type"] for e in got.logs] == ["start", "end"]
    assert got.logs[0]["metadata"] == {
        "nested": {"list": [1, 2.5, None, True, {"deep": "é✓"}]},
        "nan": "NaN",
        "big": 2**60,
        "tuple": [1, 2],
    }
    assert got.logs[1]["metadata"] == {"extra": 1}
    assert ISO_MILLIS.match(got.created_at)
    assert ISO_MILLIS.match(got.updated_at)
    assert got.created_at <= got.updated_at
    assert list(got.logs[0]) == ["timestamp", "type", "title", "description", "metadata"]

    tail = pg_store.read_from(rid, 1)
    assert tail is not None
    assert (tail.offset, [e["type"] for e in tail.logs]) == (1, ["end"])


def test_postgres_missing_run_and_bad_ids(pg_store: PostgresLogStore) -> None:
    with pytest.raises(NotFound, match="no logs for run 'nope'"):
        pg_store.require("nope")
    for bad in ("", "   ", "a\x00b", "x" * 300):
        with pytest.raises(InvalidArgument, match="run_id"):
            pg_store.require(bad)


def test_postgres_concurrent_appends_are_numbered_without_gaps(pg_store: PostgresLogStore) -> None:
    rid = run_id()

    def write(worker: int) -> None:
        for i in range(10):
            pg_store.append(rid, make_entry("info", f"w{worker}", str(i)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = pg_store.get(rid)
    assert got is not None
    assert len(got.logs) == 40
    for worker in range(4):
        mine = [e["description"] for e in got.logs if e["title"] == f"w{worker}"]
        assert mine == [str(i) for i in range(10)]


def test_postgres_tables_are_created_once_even_by_many(pool: ConnectionPool) -> None:
    stores = [PostgresLogStore(pool) for _ in range(4)]
    threads = [threading.Thread(target=s.ensure_schema) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rid = run_id()
    stores[0].append(rid, make_entry("info", "t", "d"))
    assert stores[3].require(rid).logs[0]["title"] == "t"


# -- following ------------------------------------------------------------------------------


def append_later(
    store: LogStore, rid: str, types: list[str], delay_s: float = 0.05
) -> threading.Thread:
    def work() -> None:
        for kind in types:
            time.sleep(delay_s)
            store.append(rid, make_entry(kind, kind.title(), f"a {kind} entry"))

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_follow_streams_live_entries_and_ends_at_a_terminal_one(pg_store: PostgresLogStore) -> None:
    rid = run_id()
    pg_store.append(rid, make_entry("start", "Start", "s"))
    writer = append_later(pg_store, rid, ["status", "result", "success"])
    try:
        events = list(pg_store.follow(rid, timeout_s=20))
    finally:
        writer.join()
    assert [(e.index, e.entry["type"]) for e in events] == [
        (0, "start"),
        (1, "status"),
        (2, "result"),
        (3, "success"),
    ]


def test_follow_a_finished_run_gives_everything_then_ends(pg_store: PostgresLogStore) -> None:
    rid = run_id()
    for kind in ("start", "end", "status", "success", "end"):
        pg_store.append(rid, make_entry(kind, kind, kind))
    events = list(pg_store.follow(rid, timeout_s=20))
    assert [e.entry["type"] for e in events] == ["start", "end", "status", "success", "end"]
    resumed = list(pg_store.follow(rid, timeout_s=20, start=3))
    assert [e.index for e in resumed] == [3, 4]
    assert list(pg_store.follow(rid, timeout_s=20, start=5)) == []


def test_follow_unknown_run_is_not_found_at_once(pg_store: PostgresLogStore) -> None:
    with pytest.raises(NotFound):
        next(pg_store.follow(run_id(), timeout_s=20))


def test_follow_ends_at_its_deadline_and_when_told_to_stop(pg_store: PostgresLogStore) -> None:
    rid = run_id()
    pg_store.append(rid, make_entry("status", "Working", "w"))
    assert [e.index for e in pg_store.follow(rid, timeout_s=0.2)] == [0]
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    try:
        assert [e.index for e in pg_store.follow(rid, timeout_s=20, should_stop=stop.is_set)] == [0]
    finally:
        timer.join()


def test_follow_a_running_run_waits_for_its_first_entry_and_its_end(
    pg_store: PostgresLogStore,
) -> None:
    """With ``running``, terminal entries do not end the stream; the run's end does."""
    rid = run_id()
    done = threading.Event()

    def orchestrator() -> None:
        for kind in ("start", "end", "start", "success", "end"):
            time.sleep(0.05)
            pg_store.append(rid, make_entry(kind, kind, kind))
        done.set()
        pg_store.wake(rid)

    thread = threading.Thread(target=orchestrator)
    thread.start()
    try:
        events = list(pg_store.follow(rid, timeout_s=20, running=lambda: not done.is_set()))
    finally:
        thread.join()
    assert [e.entry["type"] for e in events] == ["start", "end", "start", "success", "end"]


# -- choosing a store -------------------------------------------------------------------------


def test_log_store_kind_follows_the_orchestrator() -> None:
    kind = log_store_kind
    assert kind(WorkflowSettings()) == "postgres"
    assert kind(WorkflowSettings(orchestrator_function="datamorph-orchestrator")) == "dynamodb"
    assert kind(WorkflowSettings(orchestrator_function="f", log_store="postgres")) == "postgres"
    assert kind(WorkflowSettings(log_store="dynamodb")) == "dynamodb"


def test_create_log_store_builds_the_configured_adapter(
    pool: ConnectionPool, dynamo_settings: Settings, aws_session: boto3.session.Session
) -> None:
    defaults = Settings()
    pg = create_log_store(defaults.workflows, defaults.aws, defaults.limits, pool)
    assert isinstance(pg, PostgresLogStore)
    settings = dynamo_settings.with_flat(log_store="dynamodb")
    dynamo = create_log_store(
        settings.workflows, settings.aws, settings.limits, pool, session=aws_session
    )
    try:
        assert isinstance(dynamo, DynamoDBLogStore)
        assert dynamo.get(run_id()) is None
    finally:
        dynamo.close()


def test_postgres_retention_deletes_runs_not_updated_for_the_period(
    pool: ConnectionPool, database_url: str
) -> None:
    keeper = PostgresLogStore(pool, poll_interval_s=0.05)  # no retention: keeps everything
    old, recent = run_id(), run_id()
    for rid in (old, recent):
        keeper.append(rid, make_entry("start", "Starting", "first", {}))
    conn = psycopg2.connect(own_tables_dsn(database_url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE datamorph_gateway.workflow_runs"
                " SET updated_at = now() - interval '3 days' WHERE run_id = %s",
                (old,),
            )
        assert keeper.purge() == 0
        assert keeper.get(old) is not None
        store = PostgresLogStore(pool, poll_interval_s=0.05, retention_s=2 * 86400)
        store.ensure_schema()  # purges at start-up
        assert store.get(old) is None
        assert store.get(recent) is not None
        with conn, conn.cursor() as cur:  # the entries went with their run
            cur.execute(
                "SELECT count(*) FROM datamorph_gateway.workflow_log_entries WHERE run_id = %s",
                (old,),
            )
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_log_retention_is_a_setting() -> None:
    assert Settings().workflows.log_retention_days == 0
    with pytest.raises(ConfigError, match="LOG_RETENTION_DAYS"):
        load_settings(environ={"LOG_RETENTION_DAYS": "-1"})
