"""The demo dataset a fresh embedded setup starts with, so every RPC has something to show.

The data is generated in SQL from `generate_series` and a fixed integer hash (no random(),
no now()), so every machine and every PostgreSQL version gets byte-identical rows, and
examples and tests can quote them.
"""

from __future__ import annotations

import logging

import psycopg2
from psycopg2 import sql

__all__ = ["CUSTOMER_COUNT", "ORDER_COUNT", "ORDER_STATUSES", "seed_demo"]

_log = logging.getLogger(__name__)

CUSTOMER_COUNT = 1000
ORDER_COUNT = 5000
ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")

# Any constant works; it only has to be the same in every process that might seed.
_SEED_LOCK_KEY = 0x444D_4757_5345_4544  # "DMGWSEED"

# murmur3's 32-bit finaliser over (n, salt): deterministic, well mixed, and written out
# here so that it cannot change with the server version the way hashint8() could. The
# multiplications by 0x85EBCA6B and 0xC2B2AE35 (mod 2^32) go in 16-bit halves so that
# they fit in a bigint.
_HASH_FUNCTION = """
CREATE FUNCTION pg_temp.dm_hash(n bigint, salt integer) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT AS $fn$
DECLARE
    x bigint := (n * 2654435761 + salt * 40503) & 4294967295;
BEGIN
    x := x # (x >> 16);
    x := (x * 51819 + (((x * 34283) & 65535) << 16)) & 4294967295;
    x := x # (x >> 13);
    x := (x * 44597 + (((x * 49842) & 65535) << 16)) & 4294967295;
    RETURN x # (x >> 16);
END
$fn$
"""

_SCHEMA = """
CREATE TABLE public.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    country text,
    created_at timestamptz DEFAULT now(),
    lifetime_value numeric(12, 2)
);

CREATE TABLE public.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    ordered_at timestamptz,
    status text NOT NULL DEFAULT 'pending'
        CONSTRAINT orders_status_check
        CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    amount numeric(12, 2),
    items jsonb
);

CREATE INDEX orders_customer_id_idx ON public.orders (customer_id);

COMMENT ON TABLE public.customers IS 'DataMorph Gateway demo data: customers';
COMMENT ON TABLE public.orders IS 'DataMorph Gateway demo data: orders of customers';
"""

# Customers are created in id order over two years, so ids and created_at agree; every
# 50th has no country, to show NULLs. Identity values are 1..N because the table is new.
_CUSTOMERS = """
INSERT INTO public.customers (name, email, country, created_at)
SELECT first_name || ' ' || last_name,
       lower(first_name) || '.' || lower(last_name) || '.' || g || '@example.com',
       CASE WHEN g % 50 = 0 THEN NULL
            ELSE (ARRAY['US', 'GB', 'DE', 'FR', 'ES', 'IT', 'NL', 'SE', 'PL', 'IN', 'JP',
                        'BR', 'CA', 'AU', 'MX', 'ZA'])[1 + (pg_temp.dm_hash(g, 3) % 16)::int]
       END,
       timestamptz '2023-01-01 00:00:00+00'
           + make_interval(mins => (g * 1051 + pg_temp.dm_hash(g, 4) % 1000)::int)
FROM generate_series(1, {customers}) AS g
CROSS JOIN LATERAL (
    SELECT (ARRAY['Ada', 'Alan', 'Amara', 'Bea', 'Carlos', 'Chen', 'Dara', 'Elena', 'Femi',
                  'Grace', 'Hiro', 'Ines', 'Jonas', 'Kofi', 'Lena', 'Mateo', 'Nadia', 'Omar',
                  'Priya', 'Sven'])[1 + (pg_temp.dm_hash(g, 1) % 20)::int] AS first_name,
           (ARRAY['Andersen', 'Baker', 'Costa', 'Dubois', 'Eriksson', 'Fischer', 'Garcia',
                  'Hughes', 'Ivanova', 'Jensen', 'Kim', 'Lopez', 'Mensah', 'Novak', 'Okafor',
                  'Patel', 'Rossi', 'Silva', 'Tanaka', 'Weber'])
               [1 + (pg_temp.dm_hash(g, 2) % 20)::int] AS last_name
) AS names
ORDER BY g
"""

# Each order has 1-4 distinct items from a small catalogue, costs the sum of its items,
# and is placed within a year after its customer signed up.
_ORDERS = """
WITH products (idx, sku, name, unit_price) AS (
    VALUES (1, 'SKU-1001', 'Espresso beans 1 kg', 24.90),
           (2, 'SKU-1002', 'Pour-over kettle', 49.00),
           (3, 'SKU-1003', 'Ceramic mug', 12.50),
           (4, 'SKU-1004', 'Burr grinder', 129.99),
           (5, 'SKU-1005', 'Paper filters (100)', 6.75),
           (6, 'SKU-1006', 'Milk frother', 35.00),
           (7, 'SKU-1007', 'Travel tumbler', 22.00),
           (8, 'SKU-1008', 'Decaf beans 500 g', 14.20),
           (9, 'SKU-1009', 'Digital scale', 27.45),
           (10, 'SKU-1010', 'Cold brew jar', 31.10)
)
INSERT INTO public.orders (customer_id, ordered_at, status, amount, items)
SELECT c.id,
       c.created_at + make_interval(mins => (pg_temp.dm_hash(g, 15) % 525600)::int),
       CASE WHEN pg_temp.dm_hash(g, 16) % 100 < 5 THEN 'pending'
            WHEN pg_temp.dm_hash(g, 16) % 100 < 10 THEN 'paid'
            WHEN pg_temp.dm_hash(g, 16) % 100 < 20 THEN 'shipped'
            WHEN pg_temp.dm_hash(g, 16) % 100 < 93 THEN 'delivered'
            ELSE 'cancelled'
       END,
       basket.amount,
       basket.items
FROM generate_series(1, {orders}) AS g
JOIN public.customers AS c ON c.id = 1 + pg_temp.dm_hash(g, 11) % {customers}
CROSS JOIN LATERAL (
    SELECT jsonb_agg(
               jsonb_build_object('sku', p.sku, 'name', p.name, 'quantity', line.quantity,
                                  'unit_price', p.unit_price)
               ORDER BY line.n
           ) AS items,
           sum(line.quantity * p.unit_price) AS amount
    FROM generate_series(1, 1 + (pg_temp.dm_hash(g, 12) % 4)::int) AS line_no
    CROSS JOIN LATERAL (
        SELECT line_no AS n,
               1 + (pg_temp.dm_hash(g * 8 + line_no, 13) % 3)::int AS quantity,
               1 + ((pg_temp.dm_hash(g, 14) + 3 * line_no) % 10)::int AS product
    ) AS line
    JOIN products AS p ON p.idx = line.product
) AS basket
ORDER BY g
"""

_LIFETIME_VALUES = """
UPDATE public.customers AS c
SET lifetime_value = coalesce(
    (SELECT sum(o.amount) FROM public.orders AS o
     WHERE o.customer_id = c.id AND o.status <> 'cancelled'),
    0)
"""


def seed_demo(dsn: str) -> bool:
    """Create and fill the demo tables unless `public.customers` already exists.

    All of it happens in one transaction under an advisory lock, so a crash leaves no
    half-seeded tables and two gateways starting together seed once. Returns True when
    this call seeded, False when the data was already there.
    """
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SEED_LOCK_KEY,))
            cur.execute("SELECT to_regclass('public.customers') IS NOT NULL")
            row = cur.fetchone()
            if row is not None and row[0]:
                return False
            counts = {"customers": sql.Literal(CUSTOMER_COUNT), "orders": sql.Literal(ORDER_COUNT)}
            cur.execute(_HASH_FUNCTION)
            cur.execute(_SCHEMA)
            cur.execute(sql.SQL(_CUSTOMERS).format(**counts))
            cur.execute(sql.SQL(_ORDERS).format(**counts))
            cur.execute(_LIFETIME_VALUES)
            cur.execute("DROP FUNCTION pg_temp.dm_hash(bigint, integer)")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE public.customers, public.orders")
    finally:
        conn.close()
    _log.info("seeded the demo dataset (%d customers, %d orders)", CUSTOMER_COUNT, ORDER_COUNT)
    return True
