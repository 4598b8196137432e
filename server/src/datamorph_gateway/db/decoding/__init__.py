"""PostgreSQL result values as JSON-ready Python values, per the contract's value table.

Decoding happens inside psycopg2's fetch: ``install()`` registers typecasters for the
built-in types that turn PostgreSQL's text output straight into the JSON value, so no
``datetime``/``Decimal``/``memoryview`` is ever built only to be turned back into text.
The casters rely on the text formats pinned by ``SESSION_OPTIONS``; they are sent as
libpq startup options, so they are the session defaults that ``RESET ALL`` and
``DISCARD ALL`` go back to after user SQL changed them. If user SQL changes a format
and reads in the same session, values in that format pass through as PostgreSQL's
text instead of failing the query.

Types whose OIDs differ per database (enums, domains, composites, arrays of those,
extension types) are resolved once per OID by ``TypeCatalog``; values psycopg2 left
as text are finished by ``decode_rows``. Nothing here knows protobuf: the servicer's
``wire`` module puts the values into messages.

One module per concern, as psycopg has one per type family:
- ``startup``: the session formats, as libpq start-up options;
- ``numbers``, ``text``, ``datetimes``, ``json``: the decoders of each family;
- ``arrays``: the array parser, and psycopg2's array casters made to take bounds;
- ``oids``: the built-in types' names and arrays; ``catalog``: every column's type;
- ``casters``: the decoders installed into psycopg2; ``rows``: the pass after the fetch.

Rules beyond the contract's table, so a typed client can rely on them:
- date/timestamp/timestamptz ``infinity``, ``-infinity`` and BC values stay exactly as
  PostgreSQL prints them (``"0044-03-15 BC"``, ``"0044-03-15 12:00:00+00 BC"``): ISO-8601
  has no BC era and no infinity.
- timestamptz/timetz offsets are ``±HH:MM``; historical offsets with seconds (local mean
  time before 1900 in a non-UTC session) keep them, ``±HH:MM:SS``.
- intervals are PostgreSQL's ``iso_8601`` style, which signs each field (``P-1Y-2M3DT-4H``).
- int2vector and oidvector are text (space separated), as PostgreSQL prints them.
- json/jsonb numbers too large for a double (``1e400``) become their text, so no NaN or
  infinity reaches JSON; huge integers stay exact Python ints until protobuf (doubles).
- a domain column is reported with its base type's name: PostgreSQL itself describes a
  domain column by its base type, which is also what a client needs to decode it.
"""

from datamorph_gateway.db.decoding.arrays import parse_array
from datamorph_gateway.db.decoding.casters import install
from datamorph_gateway.db.decoding.catalog import ColumnType, TypeCatalog
from datamorph_gateway.db.decoding.rows import decode_rows
from datamorph_gateway.db.decoding.startup import SESSION_OPTIONS, startup_options

__all__ = [
    "SESSION_OPTIONS",
    "ColumnType",
    "TypeCatalog",
    "decode_rows",
    "install",
    "parse_array",
    "startup_options",
]
