"""GetSchemas' answers per relation, kept as protobuf and trusted only under a current stamp.

The database layer stamps every requested relation on each call (db/stamps.py) and
asks ``lookup`` for a message built under that very stamp; it describes again only the
relations it gets nothing for, and ``message`` builds and keeps their messages. So an
entry is never served after the catalog rows it came from changed, whichever process or
replica changed them; what the cache saves is the describe statement and building the
message. Entries are evicted least recently used beyond ``max_relations`` or
``max_bytes`` (their serialized size); ``max_relations`` 0 turns the cache off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.db.catalog import READABLE_KINDS, TableDescription
from datamorph_gateway.db.stamps import Stamp
from datamorph_gateway.wire import set_scalar

_SCALARS = ("column_default", "character_maximum_length", "numeric_precision", "numeric_scale")


def table_schema(table: TableDescription) -> pb.TableSchema:
    """One relation's part of a GetSchemasResponse."""
    schema = pb.TableSchema(
        table_name=table.relation.name,
        schema=table.relation.schema,
        table_type=READABLE_KINDS[table.relation.kind],
        primary_keys=table.primary_keys,
    )
    for col in table.columns:
        column = schema.columns.add(
            column_name=col["column_name"],
            data_type=col["data_type"],
            is_nullable=col["is_nullable"],
            ordinal_position=col["ordinal_position"],
            udt_name=col["udt_name"],
            type=col["type"],
        )
        for key in _SCALARS:
            set_scalar(getattr(column, key), col[key])
    for fk in table.foreign_keys:
        schema.foreign_keys.add(**fk)
    return schema


class SchemaCache:
    """Messages by ``Stamp.key``, each with the stamp version it was built under.

    Messages handed out are shared: callers copy them into their response, never change them.
    """

    def __init__(self, max_relations: int, max_bytes: int) -> None:
        self.max_relations = max_relations
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], tuple[str, pb.TableSchema, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_relations > 0

    def lookup(self, stamp: Stamp) -> pb.TableSchema | None:
        """The message built under exactly this stamp, if kept."""
        with self._lock:
            entry = self._entries.get(stamp.key)
            if entry is None or entry[0] != stamp.version:
                return None
            self._entries.move_to_end(stamp.key)
            return entry[1]

    def message(self, table: TableDescription | pb.TableSchema) -> pb.TableSchema:
        """A looked-up message as it is; a fresh description built, and kept if stamped."""
        if isinstance(table, pb.TableSchema):
            return table
        message = table_schema(table)
        if table.stamp is not None and self.enabled:
            self._put(table.stamp, message)
        return message

    def _put(self, stamp: Stamp, message: pb.TableSchema) -> None:
        size = message.ByteSize()
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(stamp.key, None)
            if old is not None:
                self._bytes -= old[2]
            self._entries[stamp.key] = (stamp.version, message, size)
            self._bytes += size
            while len(self._entries) > self.max_relations or self._bytes > self.max_bytes:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes
