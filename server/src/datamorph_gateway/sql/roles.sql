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
--
-- It is safe to run again (after new schemas appear, or to repair grants). The role names
-- can be changed with psql variables: -v app_role=... -v reader_role=... -v watchdog_role=...
-- The embedded PostgreSQL of `make run` is set up by this same script.
--
--   app_role       the gateway's serving role: owns the database and what the gateway
--                  creates in it (ExecuteQuery may create schemas and tables); no superuser,
--                  no CREATEDB/CREATEROLE/REPLICATION/BYPASSRLS, and none of the predefined
--                  roles that reach the server's files or programs or signal other sessions.
--   reader_role    read_only requests and StreamQuery: SELECT on every table (today's and,
--                  through default privileges, the app role's future ones), nothing else,
--                  and default_transaction_read_only = on.
--   watchdog_role  used only by the gateway itself to end a backend of the two roles above
--                  that ignored a cancel; caller SQL never runs as it.
--
-- Where the connected role is a superuser (the embedded cluster, self-managed servers), the
-- script also revokes EXECUTE on the signal and server-file functions from PUBLIC in this
-- database, so caller SQL cannot end other sessions (the gateway's own pooled connections
-- included) even of its own role; the watchdog role gets pg_cancel_backend and
-- pg_terminate_backend back. RDS does not let its master user do this: there the
-- functions stay executable by PUBLIC, and a role can still only signal its own sessions.

\set ON_ERROR_STOP on
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

SELECT rolsuper AS connected_as_superuser FROM pg_roles WHERE rolname = current_user \gset

BEGIN;

-- The roles: created if missing, their attributes set every time.
SELECT format('CREATE ROLE %I', name)
  FROM unnest(ARRAY[:'app_role', :'reader_role', :'watchdog_role']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
ALTER ROLE :"app_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"reader_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"watchdog_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE :"reader_role" SET default_transaction_read_only = on;

-- Nothing that reaches the server's files or programs, or signals other roles' sessions.
SELECT format('REVOKE %I FROM %I', granted.rolname, member.rolname)
  FROM pg_auth_members m
  JOIN pg_roles granted ON granted.oid = m.roleid
  JOIN pg_roles member ON member.oid = m.member
 WHERE member.rolname IN (:'app_role', :'reader_role', :'watchdog_role')
   AND granted.rolname IN ('pg_execute_server_program', 'pg_read_server_files',
                           'pg_write_server_files', 'pg_signal_backend',
                           'pg_read_all_data', 'pg_write_all_data') \gexec

-- A non-superuser administrator (RDS's master user) must be a member of the app role to
-- hand it the database and to set its default privileges.
SELECT format('GRANT %I TO %I', :'app_role', current_user)
 WHERE NOT :'connected_as_superuser'::boolean
   AND NOT pg_has_role(current_user, :'app_role', 'MEMBER') \gexec

-- The app role owns the database (and so, from PostgreSQL 15, its public schema).
SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'app_role') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I',
              current_database(), :'reader_role', :'watchdog_role') \gexec

-- The reader: USAGE on every schema and SELECT on every table and view there now...
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', nspname, :'reader_role'),
       format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', nspname, :'reader_role')
  FROM pg_namespace
 WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' \gexec
-- ...and on what the app role creates later.
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_role" GRANT USAGE ON SCHEMAS TO :"reader_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"app_role" GRANT SELECT ON TABLES TO :"reader_role";

-- The watchdog may signal the sessions of the app and reader roles (and nothing else).
GRANT :"app_role", :"reader_role" TO :"watchdog_role";

COMMIT;

\if :connected_as_superuser
BEGIN;
SELECT format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', p.oid::regprocedure)
  FROM pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::regnamespace
   AND p.proname IN ('pg_cancel_backend', 'pg_terminate_backend',
                     'pg_log_backend_memory_contexts', 'pg_reload_conf', 'pg_rotate_logfile',
                     'pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file',
                     'pg_ls_logdir', 'pg_ls_waldir', 'pg_ls_tmpdir', 'pg_ls_archive_statusdir',
                     'lo_import', 'lo_export') \gexec
SELECT format('GRANT EXECUTE ON FUNCTION %s TO %I', p.oid::regprocedure, :'watchdog_role')
  FROM pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::regnamespace
   AND p.proname IN ('pg_cancel_backend', 'pg_terminate_backend') \gexec
COMMIT;
\endif
