from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RowFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROW_FORMAT_UNSPECIFIED: _ClassVar[RowFormat]
    ROW_FORMAT_OBJECT: _ClassVar[RowFormat]
    ROW_FORMAT_ARRAY: _ClassVar[RowFormat]
ROW_FORMAT_UNSPECIFIED: RowFormat
ROW_FORMAT_OBJECT: RowFormat
ROW_FORMAT_ARRAY: RowFormat

class StartWorkflowRequest(_message.Message):
    __slots__ = ("prompt", "source_tables", "target_table", "idempotency_key")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TABLES_FIELD_NUMBER: _ClassVar[int]
    TARGET_TABLE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    source_tables: _containers.RepeatedScalarFieldContainer[str]
    target_table: str
    idempotency_key: str
    def __init__(self, prompt: _Optional[str] = ..., source_tables: _Optional[_Iterable[str]] = ..., target_table: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StartWorkflowResponse(_message.Message):
    __slots__ = ("status", "run_id", "message", "details")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    status: str
    run_id: str
    message: str
    details: _struct_pb2.Struct
    def __init__(self, status: _Optional[str] = ..., run_id: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetSchemasRequest(_message.Message):
    __slots__ = ("table_names",)
    TABLE_NAMES_FIELD_NUMBER: _ClassVar[int]
    table_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, table_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSchemasResponse(_message.Message):
    __slots__ = ("status", "schemas")
    class SchemasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TableSchema
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TableSchema, _Mapping]] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    status: str
    schemas: _containers.MessageMap[str, TableSchema]
    def __init__(self, status: _Optional[str] = ..., schemas: _Optional[_Mapping[str, TableSchema]] = ...) -> None: ...

class TableSchema(_message.Message):
    __slots__ = ("table_name", "schema", "columns", "primary_keys", "foreign_keys", "table_type")
    TABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_KEYS_FIELD_NUMBER: _ClassVar[int]
    FOREIGN_KEYS_FIELD_NUMBER: _ClassVar[int]
    TABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    table_name: str
    schema: str
    columns: _containers.RepeatedCompositeFieldContainer[ColumnSchema]
    primary_keys: _containers.RepeatedScalarFieldContainer[str]
    foreign_keys: _containers.RepeatedCompositeFieldContainer[ForeignKey]
    table_type: str
    def __init__(self, table_name: _Optional[str] = ..., schema: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[ColumnSchema, _Mapping]]] = ..., primary_keys: _Optional[_Iterable[str]] = ..., foreign_keys: _Optional[_Iterable[_Union[ForeignKey, _Mapping]]] = ..., table_type: _Optional[str] = ...) -> None: ...

class ColumnSchema(_message.Message):
    __slots__ = ("column_name", "data_type", "is_nullable", "column_default", "ordinal_position", "character_maximum_length", "numeric_precision", "numeric_scale", "udt_name", "type")
    COLUMN_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    IS_NULLABLE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    CHARACTER_MAXIMUM_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_PRECISION_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_SCALE_FIELD_NUMBER: _ClassVar[int]
    UDT_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    column_name: str
    data_type: str
    is_nullable: str
    column_default: _struct_pb2.Value
    ordinal_position: int
    character_maximum_length: _struct_pb2.Value
    numeric_precision: _struct_pb2.Value
    numeric_scale: _struct_pb2.Value
    udt_name: str
    type: str
    def __init__(self, column_name: _Optional[str] = ..., data_type: _Optional[str] = ..., is_nullable: _Optional[str] = ..., column_default: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., ordinal_position: _Optional[int] = ..., character_maximum_length: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., numeric_precision: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., numeric_scale: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., udt_name: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class ForeignKey(_message.Message):
    __slots__ = ("column_name", "foreign_table_schema", "foreign_table_name", "foreign_column_name", "constraint_name")
    COLUMN_NAME_FIELD_NUMBER: _ClassVar[int]
    FOREIGN_TABLE_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    FOREIGN_TABLE_NAME_FIELD_NUMBER: _ClassVar[int]
    FOREIGN_COLUMN_NAME_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_NAME_FIELD_NUMBER: _ClassVar[int]
    column_name: str
    foreign_table_schema: str
    foreign_table_name: str
    foreign_column_name: str
    constraint_name: str
    def __init__(self, column_name: _Optional[str] = ..., foreign_table_schema: _Optional[str] = ..., foreign_table_name: _Optional[str] = ..., foreign_column_name: _Optional[str] = ..., constraint_name: _Optional[str] = ...) -> None: ...

class GetDataRequest(_message.Message):
    __slots__ = ("table_names", "limit")
    TABLE_NAMES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    table_names: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, table_names: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class GetDataResponse(_message.Message):
    __slots__ = ("status", "data", "columns")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.ListValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.ListValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    status: str
    data: _containers.MessageMap[str, _struct_pb2.ListValue]
    columns: _containers.MessageMap[str, _struct_pb2.ListValue]
    def __init__(self, status: _Optional[str] = ..., data: _Optional[_Mapping[str, _struct_pb2.ListValue]] = ..., columns: _Optional[_Mapping[str, _struct_pb2.ListValue]] = ...) -> None: ...

class ExecuteQueryRequest(_message.Message):
    __slots__ = ("query", "params", "read_only", "max_rows", "row_format")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_FORMAT_FIELD_NUMBER: _ClassVar[int]
    query: str
    params: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    read_only: bool
    max_rows: int
    row_format: RowFormat
    def __init__(self, query: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., read_only: _Optional[bool] = ..., max_rows: _Optional[int] = ..., row_format: _Optional[_Union[RowFormat, str]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "type", "key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    key: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ExecuteQueryResponse(_message.Message):
    __slots__ = ("status", "columns", "rows", "row_count", "rows_affected", "command", "truncated")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    status: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    row_count: int
    rows_affected: float
    command: str
    truncated: bool
    def __init__(self, status: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., row_count: _Optional[int] = ..., rows_affected: _Optional[float] = ..., command: _Optional[str] = ..., truncated: _Optional[bool] = ...) -> None: ...

class StreamQueryRequest(_message.Message):
    __slots__ = ("query", "params", "batch_rows", "row_format")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    ROW_FORMAT_FIELD_NUMBER: _ClassVar[int]
    query: str
    params: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    batch_rows: int
    row_format: RowFormat
    def __init__(self, query: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., batch_rows: _Optional[int] = ..., row_format: _Optional[_Union[RowFormat, str]] = ...) -> None: ...

class StreamQueryResponse(_message.Message):
    __slots__ = ("status", "columns", "rows", "rows_sent", "done")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_SENT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    status: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    rows: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    rows_sent: float
    done: bool
    def __init__(self, status: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., rows_sent: _Optional[float] = ..., done: _Optional[bool] = ...) -> None: ...

class GetLogsRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetLogsResponse(_message.Message):
    __slots__ = ("status", "run_id", "log_count", "logs", "created_at", "updated_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LOG_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    status: str
    run_id: str
    log_count: int
    logs: _containers.RepeatedCompositeFieldContainer[LogEntry]
    created_at: str
    updated_at: str
    def __init__(self, status: _Optional[str] = ..., run_id: _Optional[str] = ..., log_count: _Optional[int] = ..., logs: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ...) -> None: ...

class WatchLogsRequest(_message.Message):
    __slots__ = ("run_id", "start_index")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    start_index: int
    def __init__(self, run_id: _Optional[str] = ..., start_index: _Optional[int] = ...) -> None: ...

class WatchLogsResponse(_message.Message):
    __slots__ = ("run_id", "index", "entry")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    index: int
    entry: LogEntry
    def __init__(self, run_id: _Optional[str] = ..., index: _Optional[int] = ..., entry: _Optional[_Union[LogEntry, _Mapping]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("timestamp", "type", "title", "description", "metadata")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    timestamp: str
    type: str
    title: str
    description: str
    metadata: _struct_pb2.Struct
    def __init__(self, timestamp: _Optional[str] = ..., type: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "checks", "version")
    class ChecksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: HealthCheck
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[HealthCheck, _Mapping]] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    status: str
    checks: _containers.MessageMap[str, HealthCheck]
    version: str
    def __init__(self, status: _Optional[str] = ..., checks: _Optional[_Mapping[str, HealthCheck]] = ..., version: _Optional[str] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("status", "latency_ms", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: str
    latency_ms: float
    message: str
    def __init__(self, status: _Optional[str] = ..., latency_ms: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...
