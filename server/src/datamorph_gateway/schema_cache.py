"""GetSchemas' answers, kept as serialized protobuf and trusted only under a current stamp.

The database layer versions every request on each call (db/stamps.py: roles.sql's DDL
counter, or a digest of the catalog rows) and asks ``answer`` for a whole answer kept under
that very version: a warm call sends those bytes as they are, with no message built, copied
or serialized. When the counter moved but an answer is kept for the names (``holds``), it
asks again with the digest too, which DDL elsewhere in the database leaves as it was.
Otherwise it stamps each relation and asks
``lookup`` for each relation's part built under its stamp, describes again only the
relations it gets nothing for, and ``assemble`` joins the parts into the answer and keeps
it. So nothing is served after the catalog rows it came from changed, whichever process or
replica changed them; what the cache saves is the describe statement, building the message
and serializing it.

A GetSchemasResponse on the wire is its ``status`` field followed by one map entry per name,
and each entry is the name and the relation's TableSchema as bytes, so the answer is joined
from the parts' bytes (``response_bytes``): exactly the bytes
``GetSchemasResponse.SerializeToString(deterministic=True)`` gives (names in sorted order),
which tests/test_schema_cache.py holds it to. Entries are evicted least recently used
beyond ``max_relations`` (a whole answer counts as the relations it holds) or ``max_bytes``;
``max_relations`` 0 turns the cache off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from datamorph.gateway.v1 import gateway_pb2 as pb
from datamorph_gateway.db.catalog import READABLE_KINDS, TableDescription
from datamorph_gateway.db.stamps import RequestStamp, Stamp
from datamorph_gateway.wire import set_scalar

_SCALARS = ("column_default", "character_maximum_length", "numeric_precision", "numeric_scale")

# Field tags (number << 3 | 2, length-delimited) of GetSchemasResponse.status (1) and
# .schemas (2), and of a map entry's key (1) and value (2).
_STATUS = b"\x0a"
_SCHEMAS = b"\x12"
_KEY = b"\x0a"
_VALUE = b"\x12"


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


def _varint(n: int) -> bytes:
    if n < 0x80:  # a name's length, most often
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + _varint(len(data)) + data


def response_bytes(status: str, parts: dict[str, bytes]) -> bytes:
    """A serialized GetSchemasResponse: ``status``, and ``schemas`` from each name's
    serialized TableSchema, names in sorted order (by their UTF-8 bytes, as protobuf's
    deterministic serialization sorts a map's string keys)."""
    keys = sorted((name.encode(), table) for name, table in parts.items())
    return _field(_STATUS, status.encode()) + b"".join(
        _field(_SCHEMAS, _field(_KEY, key) + _field(_VALUE, table)) for key, table in keys
    )


class SchemaCache:
    """Serialized TableSchemas by ``Stamp.key``, and serialized answers by
    ``RequestStamp.key``, each with the stamp version it was built under (an answer also
    with the digest, when it was asked)."""

    def __init__(self, max_relations: int, max_bytes: int) -> None:
        self.max_relations = max_relations
        self.max_bytes = max_bytes
        # key -> (version, bytes, relations it counts for, digest of a whole answer or None)
        self._entries: OrderedDict[object, tuple[str, bytes, int, str | None]] = OrderedDict()
        self._relations = 0
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_relations > 0

    def lookup(self, stamp: Stamp) -> bytes | None:
        """The TableSchema built under exactly this stamp, serialized, if kept."""
        return self._get(stamp.key, stamp.version)

    def answer(self, stamp: RequestStamp) -> bytes | None:
        """The GetSchemasResponse given under exactly this version, serialized, if kept; or
        kept under another version but the same digest, when ``stamp`` has one (the DDL
        counter moved for DDL that changed nothing the answer reads): the answer is then
        kept under ``stamp``'s version from here on."""
        return self._get(stamp.key, stamp.version, stamp.digest)

    def holds(self, stamp: RequestStamp) -> bool:
        """Whether an answer for these names, in this session, is kept under any version."""
        with self._lock:
            return stamp.key in self._entries

    def serialized(self, table: TableDescription | bytes) -> bytes:
        """A looked-up part as it is; a fresh description built, and kept if stamped."""
        if isinstance(table, bytes):
            return table
        data = table_schema(table).SerializeToString()
        if table.stamp is not None and self.enabled:
            self._put(table.stamp.key, table.stamp.version, data, 1)
        return data

    def assemble(
        self,
        status: str,
        originals: Sequence[str],
        tables: Sequence[TableDescription | bytes],
        request: RequestStamp | None = None,
    ) -> bytes:
        """The serialized answer, one entry per name as written (a name given twice is one
        entry, as in a map); kept under ``request`` when given."""
        parts = {
            original: self.serialized(table)
            for original, table in zip(originals, tables, strict=True)
        }
        data = response_bytes(status, parts)
        if request is not None and self.enabled:
            self._put(request.key, request.version, data, len(parts), request.digest)
        return data

    def _get(self, key: object, version: str, digest: str | None = None) -> bytes | None:
        """The entry kept under ``version``, or under the same ``digest`` when one is given
        (then re-kept under ``version``)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] != version:
                if digest is None or entry[3] != digest:
                    return None
                self._entries[key] = (version, *entry[1:])
            self._entries.move_to_end(key)
            return entry[1]

    def _put(
        self, key: object, version: str, data: bytes, relations: int, digest: str | None = None
    ) -> None:
        if len(data) > self.max_bytes or relations > self.max_relations:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
                self._relations -= old[2]
            self._entries[key] = (version, data, relations, digest)
            self._bytes += len(data)
            self._relations += relations
            while self._relations > self.max_relations or self._bytes > self.max_bytes:
                _, (_, evicted, counted, _) = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
                self._relations -= counted

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes
