-- DataMorph Gateway: the database roles it serves as, with exactly the grants it needs.
--
-- Run it once per database the gateway serves, connected to that database as its owner or
-- an administrator (on RDS/Aurora: the master user), with psql:
--
--   psql "host=mydb.xxxx.eu-west-1.rds.amazonaws.com dbname=datamorph user=postgres \
--         sslmode=verify-full sslrootcert=global-bundle.pem" -f deploy/sql/roles.sql
--
-- then give the login roles their passwords, which psql hashes before they leave your
-- machine:  \password datamorph_app   \password datamorph_reader   \password datamorph_watchdog
--            \password datamorph_state
--
-- Run it again at any time (after new schemas appear, to repair grants, or to undo what a
-- caller's SQL may have planted): it is idempotent. The role names can be changed with
-- psql variables: -v app_role=... -v reader_role=... -v watchdog_role=... -v state_role=...
-- The embedded PostgreSQL of `make run` is set up by this same script at every start.
--
--   app_role       the gateway's serving role: may create schemas and tables in the database
--                  and owns its public schema, so ExecuteQuery can create and change
--                  tables; it does NOT own the database (an owner could
--                  ALTER DATABASE ... SET settings that reach every role's sessions, or set
--                  CONNECTION LIMIT 0 and lock everyone out). No superuser, no
--                  CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, and none of the predefined roles
--                  that reach the server's files or programs or signal other sessions.
--   reader_role    read_only requests and StreamQuery: SELECT on every table (today's and,
--                  through default privileges, the app role's future ones) except the
--                  gateway's own schema, nothing else, and default_transaction_read_only = on.
--   watchdog_role  used only by the gateway itself to end a backend of the two roles above
--                  that ignored a cancel; caller SQL never runs as it.
--   state_role     owns the gateway's own schema and every table in it (workflow logs,
--                  idempotency keys, run leases); used only by the gateway itself
--                  (DB_STATE_USER), never by caller SQL. The app and reader roles get
--                  nothing there: caller SQL runs as the app role, and must not read or
--                  forge other callers' logs, idempotency outcomes or leases.
--
-- The roles' own settings (ALTER ROLE ... SET) are reset at every run: caller SQL may set
-- its own role's defaults, and nothing of the gateway relies on any.
--
-- Where the connected role is a superuser (the embedded cluster, self-managed servers), the
-- script also revokes EXECUTE on the signal and server-file functions (and setseed) from
-- PUBLIC in this database, so caller SQL cannot end other sessions (the gateway's own pooled
-- connections included) even of its own role; the watchdog role gets pg_cancel_backend and
-- pg_terminate_backend back. RDS does not let its master user do this: there the functions
-- stay executable by PUBLIC, and a role can still only signal its own sessions.
--
-- Everything below names pg_catalog's functions and operators through a search_path of
-- pg_catalog alone: the app role owns schemas in this database, and a function of its own
-- with a closer match (public.unnest(text[]), public.format(...)) would otherwise run here,
-- with the rights of whoever runs this script.

\set ON_ERROR_STOP on
SET search_path = pg_catalog, pg_temp;
SET client_min_messages = warning;
\if :{?app_role}
\else
\set app_role datamorph_app
\endif
\if :{?reader_role}
\else
\set reader_role datamorph_reader
\endif
\if :{?watchdog_role}
\else
\set watchdog_role datamorph_watchdog
\endif
\if :{?state_role}
\else
\set state_role datamorph_state
\endif
\if :{?gateway_schema}
\else
\set gateway_schema datamorph_gateway
\endif

SELECT rolsuper AS connected_as_superuser FROM pg_catalog.pg_roles WHERE rolname = current_user \gset
-- Event triggers are a superuser's to create (on RDS and Aurora, rds_superuser's).
SELECT r.rolsuper OR EXISTS (SELECT FROM pg_catalog.pg_roles s
                              WHERE s.rolname = 'rds_superuser'
                                AND pg_catalog.pg_has_role(current_user, s.oid, 'MEMBER'))
       AS can_count_ddl
  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user \gset

BEGIN;

-- The roles: created if missing, their attributes and settings set every time.
SELECT pg_catalog.format('CREATE ROLE %I', name)
  FROM pg_catalog.unnest(ARRAY[:'app_role', :'reader_role', :'watchdog_role', :'state_role']::text[]) AS name
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = name) \gexec
ALTER ROLE :"app_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"reader_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"watchdog_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"state_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"app_role" RESET ALL;
ALTER ROLE :"reader_role" RESET ALL;
ALTER ROLE :"watchdog_role" RESET ALL;
ALTER ROLE :"state_role" RESET ALL;
SELECT pg_catalog.format('ALTER ROLE %I IN DATABASE %I RESET ALL', name, pg_catalog.current_database())
  FROM pg_catalog.unnest(ARRAY[:'app_role', :'reader_role', :'watchdog_role', :'state_role']::text[]) AS name \gexec
ALTER ROLE :"reader_role" SET default_transaction_read_only = on;

-- Nothing that reaches the server's files or programs, or signals other roles' sessions.
SELECT pg_catalog.format('REVOKE %I FROM %I', granted.rolname, member.rolname)
  FROM pg_catalog.pg_auth_members m
  JOIN pg_catalog.pg_roles granted ON granted.oid = m.roleid
  JOIN pg_catalog.pg_roles member ON member.oid = m.member
 WHERE member.rolname IN (:'app_role', :'reader_role', :'watchdog_role', :'state_role')
   AND granted.rolname IN ('pg_execute_server_program', 'pg_read_server_files',
                           'pg_write_server_files', 'pg_signal_backend',
                           'pg_read_all_data', 'pg_write_all_data') \gexec
-- Nobody becomes the state role (SET ROLE would reach the gateway's own tables).
SELECT pg_catalog.format('REVOKE %I FROM %I', :'state_role', member.rolname)
  FROM pg_catalog.pg_auth_members m
  JOIN pg_catalog.pg_roles member ON member.oid = m.member
 WHERE m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :'state_role')
   AND member.rolname IN (:'app_role', :'reader_role', :'watchdog_role') \gexec
-- A membership through another role cannot be revoked here without knowing why it exists:
-- stop, and name it.
SELECT pg_catalog.format(
         'DO $roles$ BEGIN RAISE EXCEPTION %L; END $roles$',
         pg_catalog.format('role %s is a member of %s through another role; revoke that '
                           'membership (the gateway refuses to serve as it)', r.rolname, p.rolname))
  FROM pg_catalog.pg_roles r, pg_catalog.pg_roles p
 WHERE r.rolname IN (:'app_role', :'reader_role', :'watchdog_role', :'state_role')
   AND p.rolname IN ('pg_execute_server_program', 'pg_read_server_files',
                     'pg_write_server_files', 'pg_signal_backend')
   AND pg_catalog.pg_has_role(r.oid, p.oid, 'MEMBER') \gexec

-- A non-superuser administrator (RDS's master user) must be a member of the app role and
-- of the state role to hand them schemas and tables and to set the app role's default
-- privileges.
SELECT pg_catalog.format('GRANT %I TO %I', name, current_user)
  FROM pg_catalog.unnest(ARRAY[:'app_role', :'state_role']::text[]) AS name
 WHERE NOT :'connected_as_superuser'::boolean
   AND NOT pg_catalog.pg_has_role(current_user, name, 'MEMBER') \gexec

-- The database stays its administrator's. An earlier version of this script made the app
-- role its owner: take it back, with any setting or limit that owner may have planted.
SELECT pg_catalog.format('ALTER DATABASE %I OWNER TO %I', d.datname, current_user),
       pg_catalog.format('ALTER DATABASE %I RESET ALL', d.datname),
       pg_catalog.format('ALTER DATABASE %I CONNECTION LIMIT -1', d.datname)
  FROM pg_catalog.pg_database d
 WHERE d.datname = pg_catalog.current_database()
   AND d.datdba = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :'app_role') \gexec
SELECT pg_catalog.format('GRANT CONNECT, CREATE, TEMPORARY ON DATABASE %I TO %I',
                         pg_catalog.current_database(), :'app_role'),
       pg_catalog.format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I',
                         pg_catalog.current_database(), :'reader_role', :'watchdog_role',
                         :'state_role') \gexec

-- The app role owns the public schema (where callers' tables go by default).
SELECT pg_catalog.format('ALTER SCHEMA public OWNER TO %I', :'app_role')
 WHERE EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'public') \gexec

-- The state role owns the gateway's own schema and everything in it, including what an
-- earlier version of this script let the app role create there; nobody else gets
-- anything on it.
CREATE SCHEMA IF NOT EXISTS :"gateway_schema" AUTHORIZATION :"state_role";
ALTER SCHEMA :"gateway_schema" OWNER TO :"state_role";
SELECT pg_catalog.format('ALTER %s %s OWNER TO %I',
                         CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                        WHEN 'm' THEN 'MATERIALIZED VIEW'
                                        WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                         c.oid::pg_catalog.regclass, :'state_role')
  FROM pg_catalog.pg_class c
 WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :'gateway_schema')
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND c.relowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :'state_role')
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.objid = c.oid AND d.deptype IN ('a', 'i')) \gexec
SELECT pg_catalog.format('ALTER %s %s OWNER TO %I',
                         CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                         p.oid::pg_catalog.regprocedure, :'state_role')
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :'gateway_schema')
   AND p.prokind IN ('f', 'p')
   AND p.proowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = :'state_role') \gexec
-- What an owner could have planted on those tables runs as the state role, or hands their
-- rows to whoever wrote it: triggers, rules and row security policies go (the gateway's
-- tables have none of their own).
SELECT pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::pg_catalog.regclass)
  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :'gateway_schema')
   AND NOT t.tgisinternal \gexec
SELECT pg_catalog.format('DROP RULE %I ON %s', r.rulename, r.ev_class::pg_catalog.regclass)
  FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
 WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :'gateway_schema')
   AND r.rulename <> '_RETURN' \gexec
SELECT pg_catalog.format('DROP POLICY %I ON %s', p.polname, p.polrelid::pg_catalog.regclass)
  FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
 WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = :'gateway_schema') \gexec
REVOKE ALL ON SCHEMA :"gateway_schema" FROM PUBLIC, :"app_role", :"reader_role";
REVOKE ALL ON ALL TABLES IN SCHEMA :"gateway_schema" FROM PUBLIC, :"app_role", :"reader_role";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA :"gateway_schema" FROM PUBLIC, :"app_role", :"reader_role";
REVOKE ALL ON ALL ROUTINES IN SCHEMA :"gateway_schema" FROM PUBLIC, :"app_role", :"reader_role";

-- Schema changes, counted (GetSchemas' cache, docs/operations.md "The schema cache"): an
-- event trigger adds one to a counter in every transaction that runs DDL in this database,
-- whoever runs it, so a gateway learns in one small statement that nothing it described can
-- have changed. The count is a row of the transaction's own: it shows, on every process and
-- replica, exactly when that DDL does. A row per backend slot (pid modulo 64), so that two
-- transactions running DDL at once rarely want the same row (and then take another). The
-- counter and its function belong to whoever runs this script; everyone may read the
-- counter, nobody else may change it, and nobody else may create anything in its schema (a
-- trigger planted on the counter would run with this script's rights at the next DDL).
-- Without the rights to create an event trigger the gateway checks its cache with a catalog
-- digest instead (slower: about 1.3 ms for 50 tables against 0.2).
\if :can_count_ddl
-- Whose the schema is, asked after CREATE SCHEMA IF NOT EXISTS, not before: one made by
-- another role between the two would be skipped, and its owner could drop what is put there.
CREATE SCHEMA IF NOT EXISTS datamorph_ddl;
SELECT pg_catalog.format(
         'DO $roles$ BEGIN RAISE EXCEPTION %L; END $roles$',
         pg_catalog.format('schema datamorph_ddl exists and belongs to %s, not to %s: drop it '
                           '(roles.sql creates it)', n.nspowner::pg_catalog.regrole, current_user))
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname = 'datamorph_ddl'
   AND n.nspowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) \gexec
SELECT pg_catalog.format(
         'DO $roles$ BEGIN RAISE EXCEPTION %L; END $roles$',
         pg_catalog.format('%s in schema datamorph_ddl belongs to %s, not to %s: drop it',
                           c.oid::pg_catalog.regclass, c.relowner::pg_catalog.regrole, current_user))
  FROM pg_catalog.pg_class c
 WHERE c.relnamespace = 'datamorph_ddl'::pg_catalog.regnamespace
   AND c.relowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) \gexec
CREATE TABLE IF NOT EXISTS datamorph_ddl.epoch (
  slot pg_catalog.int8 PRIMARY KEY,
  n pg_catalog.int8 NOT NULL DEFAULT 0
);
INSERT INTO datamorph_ddl.epoch (slot)
SELECT g FROM pg_catalog.generate_series(0, 63) AS g ON CONFLICT DO NOTHING;
-- Rows beyond the 64 (see below) folded into slot 0: the sum, all a gateway reads, stays.
WITH folded AS (DELETE FROM datamorph_ddl.epoch WHERE slot >= 64 RETURNING n)
UPDATE datamorph_ddl.epoch SET n = n + (SELECT coalesce(sum(n), 0) FROM folded)
 WHERE slot = 0;
-- Slots beyond the 64, for DDL that finds every row held.
CREATE SEQUENCE IF NOT EXISTS datamorph_ddl.slot AS pg_catalog.int8 MINVALUE 64;
-- The backend's own slot, else the first row no other transaction holds, else a new row:
-- DDL never waits for another transaction's count. (Waiting would let any login stop every
-- DDL in the database, a superuser's included, with 64 sessions each left in a transaction
-- after a CREATE TEMP TABLE.) A new row is made only while every row is held, and by DDL in
-- a REPEATABLE READ or SERIALIZABLE transaction, which cannot lock or update a row another
-- transaction counted in after its snapshot (a serialization failure) and so always counts
-- in a row of its own. Running this script again folds those rows back into slot 0.
CREATE OR REPLACE FUNCTION datamorph_ddl.count_ddl() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
  AS $count$
DECLARE
  free pg_catalog.int8;
BEGIN
  IF pg_catalog.current_setting('transaction_isolation')
       IN ('read committed', 'read uncommitted') THEN
    SELECT e.slot INTO free FROM datamorph_ddl.epoch e
     WHERE e.slot = pg_catalog.pg_backend_pid() % 64 FOR NO KEY UPDATE SKIP LOCKED;
    IF free IS NULL THEN
      SELECT e.slot INTO free FROM datamorph_ddl.epoch e
       ORDER BY e.slot LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED;
    END IF;
  END IF;
  IF free IS NOT NULL THEN
    UPDATE datamorph_ddl.epoch SET n = n + 1 WHERE slot = free;
  ELSE
    INSERT INTO datamorph_ddl.epoch (slot, n)
    VALUES (pg_catalog.nextval('datamorph_ddl.slot'::pg_catalog.regclass), 1);
  END IF;
END
$count$;
REVOKE ALL ON FUNCTION datamorph_ddl.count_ddl() FROM PUBLIC;
SELECT 'CREATE EVENT TRIGGER datamorph_ddl_epoch ON ddl_command_end '
       'EXECUTE FUNCTION datamorph_ddl.count_ddl()'
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger
                    WHERE evtname = 'datamorph_ddl_epoch') \gexec
-- ALWAYS: also in sessions with session_replication_role = replica.
ALTER EVENT TRIGGER datamorph_ddl_epoch ENABLE ALWAYS;
REVOKE ALL ON SCHEMA datamorph_ddl FROM PUBLIC;
GRANT USAGE ON SCHEMA datamorph_ddl TO PUBLIC;
REVOKE ALL ON datamorph_ddl.epoch FROM PUBLIC;
GRANT SELECT ON datamorph_ddl.epoch TO PUBLIC;
\else
\echo 'roles.sql: not a superuser (nor rds_superuser): schema changes are not counted; GetSchemas checks its cache with a catalog digest instead'
\endif

-- The reader: USAGE on every other schema and SELECT on every table and view there now...
SELECT pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %I', nspname, :'reader_role'),
       pg_catalog.format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', nspname, :'reader_role')
  FROM pg_catalog.pg_namespace
 WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'
   AND nspname <> :'gateway_schema' AND nspname <> 'datamorph_ddl' \gexec
-- ...and on what the app role creates later.
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_role" GRANT USAGE ON SCHEMAS TO :"reader_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_role" GRANT SELECT ON TABLES TO :"reader_role";
-- Never the gateway's own tables (revoked above).

-- The watchdog may signal the sessions of the app and reader roles (and nothing else).
GRANT :"app_role", :"reader_role" TO :"watchdog_role";

COMMIT;

\if :connected_as_superuser
BEGIN;
SELECT pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', p.oid::pg_catalog.regprocedure)
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
   AND p.proname IN ('pg_cancel_backend', 'pg_terminate_backend',
                     'pg_log_backend_memory_contexts', 'pg_reload_conf', 'pg_rotate_logfile',
                     'pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file',
                     'pg_ls_logdir', 'pg_ls_waldir', 'pg_ls_tmpdir', 'pg_ls_archive_statusdir',
                     'lo_import', 'lo_export', 'setseed') \gexec
SELECT pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', p.oid::pg_catalog.regprocedure,
                         :'watchdog_role')
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
   AND p.proname IN ('pg_cancel_backend', 'pg_terminate_backend') \gexec
COMMIT;
\endif
