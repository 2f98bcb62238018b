-- 001_roles.sql: provision rolegate's role model.
--
-- Run as a superuser connected to the `postgres` database:
--
--   psql -X -v ON_ERROR_STOP=1 -d postgres \
--        -v database=app \
--        -v migrator=app_migrator -v migrator_password=... \
--        -v runtime=app_user      -v runtime_password=... \
--        -v service=app_service   -v service_password=... \
--        -f migrations/001_roles.sql
--
-- `service` / `service_password` are optional: leave them out (or pass
-- `-v service=`) to skip the service role.
--
-- `-v sequence_update=on` (optional, default off) also grants UPDATE on
-- sequences to the runtime and service roles, so they may call `setval`
-- (Django `loaddata`/`sqlsequencereset`, Rails fixtures). Off, they may use
-- `nextval`/`currval` only; a re-run without it revokes UPDATE again.
--
-- The model:
--   migrator  LOGIN, BYPASSRLS, not superuser; owns the database and schema
--             public, so it runs DDL (migrations).
--   runtime   LOGIN, NOBYPASSRLS, NOCREATEDB, NOCREATEROLE; USAGE on public
--             and DML on its tables and sequences, nothing else: no CREATE on
--             any schema or the database, no temporary tables.
--   service   (optional) like runtime but BYPASSRLS, for background workers.
-- Tables and sequences the migrator creates in public later are granted to
-- runtime (and service) through default privileges.
--
-- Re-runnable: roles and the database are created only when missing, and
-- every run re-applies attributes, passwords, ownership and grants.

\set ON_ERROR_STOP on

-- Required variables. psql leaves an unset :'var' in the text verbatim, which
-- would give a confusing syntax error, so check them up front.
\if :{?database}
\else
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: missing psql variable; pass -v database=NAME'; END $$;
\endif
\if :{?migrator}
\else
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: missing psql variable; pass -v migrator=ROLE'; END $$;
\endif
\if :{?migrator_password}
\else
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: missing psql variable; pass -v migrator_password=SECRET'; END $$;
\endif
\if :{?runtime}
\else
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: missing psql variable; pass -v runtime=ROLE'; END $$;
\endif
\if :{?runtime_password}
\else
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: missing psql variable; pass -v runtime_password=SECRET'; END $$;
\endif

\if :{?sequence_update}
\else
\set sequence_update off
\endif

-- The service role is optional: skipped when `service` is unset or empty.
\if :{?service}
SELECT :'service' <> '' AS rolegate_with_service \gset
\else
\set rolegate_with_service false
\endif
\if :rolegate_with_service
\if :{?service_password}
\else
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: missing psql variable; pass -v service_password=SECRET (or leave out -v service)'; END $$;
\endif
SELECT :'service' IN (:'migrator', :'runtime') AS rolegate_conflict \gset
\if :rolegate_conflict
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: service must be a role distinct from migrator and runtime'; END $$;
\endif
\endif

-- One role for both jobs would give the application BYPASSRLS and DDL.
SELECT :'migrator' = :'runtime' AS rolegate_conflict \gset
\if :rolegate_conflict
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: migrator and runtime must be different roles'; END $$;
\endif

-- Roles -------------------------------------------------------------------

BEGIN;

SELECT format('CREATE ROLE %I', :'migrator')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'migrator') \gexec
ALTER ROLE :"migrator" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION BYPASSRLS INHERIT PASSWORD :'migrator_password';

SELECT format('CREATE ROLE %I', :'runtime')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'runtime') \gexec
ALTER ROLE :"runtime" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION NOBYPASSRLS INHERIT PASSWORD :'runtime_password';

\if :rolegate_with_service
SELECT format('CREATE ROLE %I', :'service')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'service') \gexec
ALTER ROLE :"service" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION BYPASSRLS INHERIT PASSWORD :'service_password';
\endif

-- Membership in the migrator (or in any superuser or BYPASSRLS role) would
-- let the runtime role SET ROLE around RLS and the grants below. Refuse rather
-- than silently revoke grants an operator made on purpose.
SELECT string_agg(quote_ident(g.rolname), ', ') AS rolegate_bad_memberships
  FROM pg_roles g
 WHERE g.rolname <> :'runtime'
   AND pg_has_role(:'runtime', g.oid, 'MEMBER')
   AND (g.rolname = :'migrator' OR g.rolsuper OR g.rolbypassrls) \gset
\if :{?rolegate_bad_memberships}
\warn 001_roles.sql: the runtime role is a member of :rolegate_bad_memberships
DO $$ BEGIN RAISE EXCEPTION '001_roles.sql: the runtime role must not be a member of the migrator, a superuser or a BYPASSRLS role; REVOKE that membership and re-run'; END $$;
\endif

COMMIT;

-- Database ------------------------------------------------------------------

-- CREATE DATABASE cannot run inside a transaction block.
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'migrator')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec

BEGIN;
ALTER DATABASE :"database" OWNER TO :"migrator";
-- PUBLIC gets CONNECT and TEMPORARY on a new database by default; the runtime
-- role may not create anything, temporary tables included.
REVOKE CREATE, TEMPORARY ON DATABASE :"database" FROM PUBLIC;
REVOKE CREATE, TEMPORARY ON DATABASE :"database" FROM :"runtime";
GRANT CONNECT ON DATABASE :"database" TO :"runtime";
\if :rolegate_with_service
REVOKE CREATE, TEMPORARY ON DATABASE :"database" FROM :"service";
GRANT CONNECT ON DATABASE :"database" TO :"service";
\endif
COMMIT;

-- Schema and object privileges, inside the target database -------------------

\connect :"database"

BEGIN;

-- Since PostgreSQL 15 public is owned by pg_database_owner; before that by the
-- bootstrap superuser. Either way the migrator should own it outright.
ALTER SCHEMA public OWNER TO :"migrator";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM :"runtime";
GRANT USAGE ON SCHEMA public TO :"runtime";

-- Objects that already exist (a re-run after migrations).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"runtime";
REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM :"runtime";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"runtime";

-- Objects the migrator creates later.
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"runtime";
\if :sequence_update
GRANT UPDATE ON ALL SEQUENCES IN SCHEMA public TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT UPDATE ON SEQUENCES TO :"runtime";
\else
REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  REVOKE UPDATE ON SEQUENCES FROM :"runtime";
\endif

\if :rolegate_with_service
REVOKE CREATE ON SCHEMA public FROM :"service";
GRANT USAGE ON SCHEMA public TO :"service";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"service";
REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM :"service";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"service";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"service";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"service";
\if :sequence_update
GRANT UPDATE ON ALL SEQUENCES IN SCHEMA public TO :"service";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT UPDATE ON SEQUENCES TO :"service";
\else
REVOKE UPDATE ON ALL SEQUENCES IN SCHEMA public FROM :"service";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  REVOKE UPDATE ON SEQUENCES FROM :"service";
\endif
\endif

COMMIT;
