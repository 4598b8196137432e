#!/bin/sh
# docker-entrypoint-initdb.d, after 10-roles.sql: give the gateway's four login roles their
# passwords from the container's environment (compose.yaml). psql quotes them (:'var').
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app="$DATAMORPH_APP_PASSWORD" -v reader="$DATAMORPH_READER_PASSWORD" \
    -v watchdog="$DATAMORPH_WATCHDOG_PASSWORD" -v state="$DATAMORPH_STATE_PASSWORD" <<'SQL'
ALTER ROLE datamorph_app PASSWORD :'app';
ALTER ROLE datamorph_reader PASSWORD :'reader';
ALTER ROLE datamorph_watchdog PASSWORD :'watchdog';
ALTER ROLE datamorph_state PASSWORD :'state';
SQL
