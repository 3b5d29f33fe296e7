-- Least-privilege PostgreSQL roles for afbackup.
--
-- Run once as an administrator (a superuser, or a role with CREATEROLE that
-- may grant pg_read_all_data), connected to the Airflow database:
--
--   psql "postgresql://ADMIN@DB-HOST:5432/airflow" -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql
--
-- then give each role a password interactively, so it never lands in a file
-- or in the shell history:   \password afbackup   and   \password afbackup_restore
--
-- Names used below; change them to match your installation:
--   airflow            the Airflow metadata database
--   afbackup           the dump role (backup, check), read-only
--   afbackup_restore   the restore role (restore, verify --deep, drill)
-- PostgreSQL 14 or newer (pg_read_all_data); older servers: see the
-- alternative at the end.

-- ---------------------------------------------------------------------------
-- 1. The dump role: can read every table and sequence, can change nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'afbackup') THEN
        CREATE ROLE afbackup LOGIN;
    END IF;
END
$$;
ALTER ROLE afbackup WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS INHERIT CONNECTION LIMIT 4;
-- Every session of this role is read-only, whatever the client asks.
ALTER ROLE afbackup SET default_transaction_read_only = on;

GRANT CONNECT ON DATABASE airflow TO afbackup;
-- SELECT on all tables, views and sequences and USAGE on all schemas,
-- including tables that future Airflow migrations create.
GRANT pg_read_all_data TO afbackup;

-- ---------------------------------------------------------------------------
-- 2. The restore role: creates and owns NEW databases to restore into (a
-- scratch database for drills and `verify --deep`, or a fresh database that
-- Airflow is then switched to). It has no rights on the live database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'afbackup_restore') THEN
        CREATE ROLE afbackup_restore LOGIN;
    END IF;
END
$$;
ALTER ROLE afbackup_restore WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE
    NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT 8;

-- To hand a restored database to Airflow afterwards, as an administrator:
--   ALTER DATABASE airflow_restored OWNER TO airflow;
--   \c airflow_restored
--   REASSIGN OWNED BY afbackup_restore TO airflow;
-- To restore INTO an existing database (restore --clean), connect as that
-- database's owner role instead: only the owner may drop and recreate its
-- objects.

-- ---------------------------------------------------------------------------
-- Alternative to pg_read_all_data (PostgreSQL 13 and older, or to limit the
-- dump role to the Airflow schema when the server holds other databases).
-- Run connected to the Airflow database; "public" is the Airflow schema and
-- "airflow" the role that owns its tables (and runs `airflow db migrate`):
--
--   REVOKE pg_read_all_data FROM afbackup;
--   GRANT USAGE ON SCHEMA public TO afbackup;
--   GRANT SELECT ON ALL TABLES IN SCHEMA public TO afbackup;
--   GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO afbackup;
--   -- tables and sequences created by later Airflow migrations:
--   ALTER DEFAULT PRIVILEGES FOR ROLE airflow IN SCHEMA public
--       GRANT SELECT ON TABLES TO afbackup;
--   ALTER DEFAULT PRIVILEGES FOR ROLE airflow IN SCHEMA public
--       GRANT SELECT ON SEQUENCES TO afbackup;
