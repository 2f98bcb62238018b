-- Every refused family of PRODUCT.md §5, plainly spelled, plus the policy
-- switches both ways. Format: see tests/policy_corpus.rs.
--
-- Where two classes are equally defensible the header lists both
-- (`refuse ddl|maintenance`); `refuse any` accepts any refusal class.

-- ===================================================================== DDL: tables
-- expect: refuse ddl
CREATE TABLE widgets (id bigserial PRIMARY KEY, name text NOT NULL)

-- expect: refuse ddl
CREATE TABLE IF NOT EXISTS widgets (id int)

-- expect: refuse ddl # UNLOGGED is not TEMP
CREATE UNLOGGED TABLE scratch (id int)

-- expect: refuse ddl
CREATE TABLE widgets_2024 PARTITION OF widgets FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')

-- expect: refuse ddl
ALTER TABLE users ADD COLUMN nickname text

-- expect: refuse ddl
ALTER TABLE users DROP COLUMN nickname

-- expect: refuse ddl
ALTER TABLE users RENAME TO customers

-- expect: refuse ddl
ALTER TABLE users ALTER COLUMN email SET NOT NULL

-- expect: refuse ddl # brief: DISABLE ROW LEVEL SECURITY is DDL
ALTER TABLE users DISABLE ROW LEVEL SECURITY

-- expect: refuse ddl
ALTER TABLE users NO FORCE ROW LEVEL SECURITY

-- expect: refuse ddl
ALTER TABLE users ENABLE ROW LEVEL SECURITY

-- expect: refuse ddl # disables FK and user triggers
ALTER TABLE orders DISABLE TRIGGER ALL

-- expect: refuse ddl
ALTER TABLE users SET (autovacuum_enabled = false)

-- expect: refuse ddl|role_change # ownership transfer
ALTER TABLE users OWNER TO app_admin

-- expect: refuse ddl
DROP TABLE users

-- expect: refuse ddl
DROP TABLE IF EXISTS users, posts CASCADE

-- ===================================================================== DDL: indexes, views, sequences, types, schemas
-- expect: refuse ddl
CREATE INDEX users_email_idx ON users (email)

-- expect: refuse ddl
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (lower(email))

-- expect: refuse ddl
ALTER INDEX users_email_idx RENAME TO users_email_idx2

-- expect: refuse ddl
DROP INDEX CONCURRENTLY users_email_idx

-- expect: refuse ddl
CREATE VIEW active_users AS SELECT * FROM users WHERE active

-- expect: refuse ddl
CREATE OR REPLACE VIEW active_users AS SELECT id FROM users

-- expect: refuse ddl
ALTER VIEW active_users SET (security_barrier = false)

-- expect: refuse ddl
DROP VIEW active_users

-- expect: refuse ddl
CREATE MATERIALIZED VIEW daily AS SELECT date_trunc('day', created_at) d, count(*) FROM orders GROUP BY 1

-- expect: refuse ddl
DROP MATERIALIZED VIEW daily

-- expect: refuse ddl
CREATE SEQUENCE invoice_no START 1000

-- expect: refuse ddl
ALTER SEQUENCE invoice_no RESTART WITH 1

-- expect: refuse ddl
DROP SEQUENCE invoice_no

-- expect: refuse ddl
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')

-- expect: refuse ddl
CREATE TYPE pair AS (a int, b text)

-- expect: refuse ddl
ALTER TYPE mood ADD VALUE 'ecstatic'

-- expect: refuse ddl
DROP TYPE mood

-- expect: refuse ddl
CREATE DOMAIN email AS text CHECK (VALUE ~ '@')

-- expect: refuse ddl
CREATE SCHEMA billing

-- expect: refuse ddl|role_change
CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION app_admin

-- expect: refuse ddl
ALTER SCHEMA billing RENAME TO invoicing

-- expect: refuse ddl
DROP SCHEMA public CASCADE

-- ===================================================================== DDL: functions, triggers, rules, extensions, policies
-- expect: refuse ddl
CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b'

-- expect: refuse ddl
CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$

-- expect: refuse ddl
CREATE PROCEDURE archive_old() LANGUAGE sql AS $$ DELETE FROM orders WHERE created_at < now() - interval '1 year' $$

-- expect: refuse ddl
ALTER FUNCTION add(int, int) SECURITY DEFINER

-- expect: refuse ddl
DROP FUNCTION IF EXISTS add(int, int)

-- expect: refuse ddl
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch()

-- expect: refuse ddl
DROP TRIGGER users_touch ON users

-- expect: refuse ddl
CREATE RULE no_delete AS ON DELETE TO users DO INSTEAD NOTHING

-- expect: refuse ddl
CREATE EXTENSION dblink

-- expect: refuse ddl
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public

-- expect: refuse ddl
ALTER EXTENSION pgcrypto UPDATE

-- expect: refuse ddl
DROP EXTENSION pgcrypto

-- expect: refuse ddl
CREATE POLICY tenant_isolation ON invoices USING (tenant_id = current_setting('app.current_tenant_id')::int)

-- expect: refuse ddl # a permissive "see everything" policy
CREATE POLICY everyone ON invoices AS PERMISSIVE FOR ALL TO PUBLIC USING (true)

-- expect: refuse ddl
ALTER POLICY tenant_isolation ON invoices USING (true)

-- expect: refuse ddl
DROP POLICY tenant_isolation ON invoices

-- expect: refuse ddl
CREATE AGGREGATE my_sum(int) (SFUNC = int4pl, STYPE = int)

-- expect: refuse ddl
CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)

-- expect: refuse ddl
CREATE CAST (text AS int) WITH INOUT AS IMPLICIT

-- expect: refuse ddl
CREATE COLLATION german (provider = icu, locale = 'de')

-- expect: refuse ddl
CREATE STATISTICS users_stats (dependencies) ON email, name FROM users

-- expect: refuse ddl
CREATE TEXT SEARCH CONFIGURATION my_cfg (COPY = english)

-- expect: refuse ddl
CREATE EVENT TRIGGER log_ddl ON ddl_command_start EXECUTE FUNCTION log_ddl()

-- expect: refuse ddl
CREATE LANGUAGE plperlu

-- expect: refuse ddl
CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db2', dbname 'prod')

-- expect: refuse ddl|role_change
CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'admin', password 'not-a-real-secret')

-- expect: refuse ddl
CREATE FOREIGN TABLE remote_users (id int) SERVER remote

-- expect: refuse ddl
CREATE PUBLICATION all_tables FOR ALL TABLES

-- expect: refuse ddl
CREATE SUBSCRIPTION sub CONNECTION 'host=db2 dbname=prod' PUBLICATION all_tables

-- expect: refuse ddl
CREATE DATABASE scratch

-- expect: refuse ddl
DROP DATABASE scratch

-- expect: refuse ddl
ALTER DATABASE app SET statement_timeout = 0

-- expect: refuse ddl
CREATE TABLESPACE fast LOCATION '/mnt/fast'

-- ===================================================================== DDL: COMMENT, SECURITY LABEL, SELECT INTO, CTAS, DO, IMPORT, LOAD, ALTER SYSTEM, CHECKPOINT
-- expect: refuse ddl
COMMENT ON TABLE users IS 'customer accounts'

-- expect: refuse ddl
COMMENT ON COLUMN users.email IS NULL

-- expect: refuse ddl
SECURITY LABEL FOR selinux ON TABLE users IS 'system_u:object_r:sepgsql_table_t:s0'

-- expect: refuse ddl
SELECT * INTO users_backup FROM users

-- expect: refuse ddl
SELECT id, email INTO TABLE users_backup FROM users WHERE active

-- expect: refuse ddl
CREATE TABLE users_backup AS SELECT * FROM users

-- expect: refuse ddl
CREATE TABLE IF NOT EXISTS users_backup AS TABLE users WITH NO DATA

-- expect: refuse ddl
CREATE UNLOGGED TABLE t AS EXECUTE find_user(1)

-- expect: refuse ddl
DO $$ BEGIN RAISE NOTICE 'hi'; END $$

-- expect: refuse ddl
DO LANGUAGE plpgsql 'BEGIN PERFORM 1; END'

-- expect: refuse ddl
IMPORT FOREIGN SCHEMA public FROM SERVER remote INTO staging

-- expect: refuse ddl|dangerous_function # loads a shared library into the backend
LOAD 'auto_explain'

-- expect: refuse ddl
ALTER SYSTEM SET log_statement = 'none'

-- expect: refuse ddl
ALTER SYSTEM RESET ALL

-- expect: refuse ddl|maintenance
CHECKPOINT

-- expect: refuse ddl|maintenance # PRODUCT.md lists REFRESH under DDL
REFRESH MATERIALIZED VIEW daily

-- expect: refuse ddl|maintenance
REFRESH MATERIALIZED VIEW CONCURRENTLY daily

-- expect: refuse ddl|maintenance
REINDEX TABLE users

-- expect: refuse ddl|maintenance
REINDEX (VERBOSE) DATABASE app

-- expect: refuse ddl|maintenance
CLUSTER users USING users_pkey

-- expect: refuse ddl|maintenance
CLUSTER

-- ===================================================================== row-security toggles
-- expect: refuse rls_toggle
SET row_security = off

-- expect: refuse rls_toggle
SET LOCAL row_security TO off

-- expect: refuse rls_toggle
SET SESSION row_security=off

-- expect: allow # turning it on cannot loosen anything (pg_dump --enable-row-security sends it)
SET row_security = on

-- expect: allow # back to the role's/database's default, which rolegate check requires to be on
SET row_security TO DEFAULT

-- expect: allow # as DEFAULT
RESET row_security

-- expect: allow
SET LOCAL row_security = true

-- expect: allow
SET SESSION row_security TO 'yes'

-- expect: allow
set row_security = 1

-- expect: refuse rls_toggle # a boolean prefix PostgreSQL reads as off
SET row_security = of

-- expect: refuse rls_toggle
SET row_security = 'false'

-- expect: refuse rls_toggle
SET row_security = 0

-- expect: refuse rls_toggle # a list: the server rejects it, rolegate refuses it
SET row_security = on, off

-- expect: refuse rls_toggle
SET row_security FROM CURRENT

-- expect: refuse rls_toggle
select set_config('row_security','off',false)

-- expect: refuse rls_toggle
SELECT set_config('row_security', 'off', true)

-- expect: refuse rls_toggle # non-constant setting name
SELECT set_config($1, 'off', false)

-- expect: refuse rls_toggle # non-constant setting name (any $n)
SELECT set_config($1, $2, true)

-- ===================================================================== role changes
-- expect: refuse role_change
SET ROLE postgres

-- expect: refuse role_change
SET LOCAL ROLE app_admin

-- expect: refuse role_change
SET ROLE NONE

-- expect: refuse role_change
RESET ROLE

-- expect: refuse role_change
SET SESSION AUTHORIZATION postgres

-- expect: refuse role_change
SET SESSION AUTHORIZATION DEFAULT

-- expect: refuse role_change
RESET SESSION AUTHORIZATION

-- expect: refuse role_change
GRANT SELECT ON users TO PUBLIC

-- expect: refuse role_change
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO app

-- expect: refuse role_change
GRANT app_admin TO app

-- expect: refuse role_change
REVOKE INSERT ON users FROM app

-- expect: refuse role_change
REVOKE app_admin FROM app

-- expect: refuse role_change
CREATE ROLE intruder LOGIN SUPERUSER

-- expect: refuse role_change # the password literal must not reach the reason
CREATE USER intruder WITH PASSWORD 'hunter2-canary-9f1c'

-- expect: refuse role_change
ALTER ROLE app BYPASSRLS

-- expect: refuse role_change # the password literal must not reach the reason
ALTER USER app WITH PASSWORD 'correct-horse-canary-3b7e'

-- expect: refuse role_change
DROP ROLE intruder

-- expect: refuse role_change
DROP USER IF EXISTS intruder

-- expect: refuse role_change
CREATE GROUP admins

-- expect: refuse role_change
ALTER GROUP admins ADD USER app

-- expect: refuse role_change
select set_config('role', 'postgres', false)

-- expect: refuse role_change
SELECT set_config('session_authorization', 'postgres', false)

-- expect: refuse ddl|role_change
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC

-- expect: refuse ddl|role_change
REASSIGN OWNED BY app TO postgres

-- expect: refuse ddl|role_change
DROP OWNED BY app CASCADE

-- ===================================================================== encoding changes
-- expect: refuse encoding_change
SET client_encoding = 'LATIN1'

-- expect: refuse encoding_change
SET client_encoding TO 'SQL_ASCII'

-- expect: refuse encoding_change # BIG5/GBK/SJIS are the classic backslash-in-multibyte attack encodings
SET SESSION client_encoding = 'BIG5'

-- expect: refuse encoding_change
SET NAMES 'SQL_ASCII'

-- expect: refuse encoding_change
SET NAMES 'LATIN1'

-- expect: refuse encoding_change
SET standard_conforming_strings = off

-- expect: refuse encoding_change
SET LOCAL standard_conforming_strings TO 'off'

-- expect: refuse encoding_change
SELECT set_config('client_encoding', 'SJIS', false)

-- expect: refuse encoding_change
SELECT set_config('standard_conforming_strings', 'off', false)

-- ===================================================================== COPY to/from files or programs
-- expect: refuse copy_file
COPY users TO '/tmp/users.csv'

-- expect: refuse copy_file
COPY users FROM '/etc/passwd'

-- expect: refuse copy_file
COPY users (email) FROM '/var/lib/postgresql/import.csv' WITH (FORMAT csv, HEADER true)

-- expect: refuse copy_file
COPY (SELECT * FROM users) TO '/tmp/dump.csv' WITH CSV HEADER

-- expect: refuse copy_file
COPY users TO PROGRAM 'gzip > /tmp/users.gz'

-- expect: refuse copy_file
COPY users FROM PROGRAM 'curl -s https://example.com/users.csv' WITH (FORMAT csv)

-- expect: refuse copy_file
COPY (SELECT 1) TO PROGRAM 'sh'

-- ===================================================================== dangerous functions (documented deny-list)
-- expect: refuse dangerous_function
SELECT pg_read_file('/etc/passwd')

-- expect: refuse dangerous_function
SELECT pg_read_file('postgresql.auto.conf', 0, 200, true)

-- expect: refuse dangerous_function
SELECT pg_read_binary_file('/etc/passwd')

-- expect: refuse dangerous_function
SELECT pg_ls_dir('.')

-- expect: refuse dangerous_function
SELECT * FROM pg_ls_dir('/etc', true, false)

-- expect: refuse dangerous_function
SELECT pg_stat_file('/etc/passwd')

-- expect: refuse dangerous_function
SELECT * FROM pg_ls_logdir()

-- expect: refuse dangerous_function
SELECT * FROM pg_ls_waldir()

-- expect: refuse dangerous_function
SELECT lo_import('/etc/passwd')

-- expect: refuse dangerous_function
SELECT lo_export(16401, '/tmp/exfil')

-- expect: refuse dangerous_function
SELECT pg_terminate_backend(12345)

-- expect: refuse dangerous_function
SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = 'postgres'

-- expect: refuse dangerous_function
SELECT pg_reload_conf()

-- expect: refuse dangerous_function
SELECT pg_rotate_logfile()

-- expect: refuse dangerous_function
SELECT * FROM dblink('dbname=postgres user=postgres', 'SELECT 1') AS t(x int)

-- expect: refuse dangerous_function
SELECT dblink_exec('dbname=postgres user=postgres', 'ALTER TABLE users DISABLE ROW LEVEL SECURITY')

-- expect: refuse dangerous_function
SELECT dblink_connect('c', 'dbname=postgres user=postgres')

-- expect: refuse dangerous_function # executes an arbitrary query string the classifier cannot see
SELECT query_to_xml('SELECT * FROM users', true, false, '')

-- expect: refuse dangerous_function
SELECT query_to_xml_and_xmlschema('SELECT 1', true, false, '')

-- expect: refuse dangerous_function
SELECT pg_promote()

-- expect: refuse dangerous_function
SELECT pg_switch_wal()

-- expect: refuse dangerous_function
SELECT pg_create_logical_replication_slot('exfil', 'test_decoding')

-- expect: refuse dangerous_function
SELECT pg_create_physical_replication_slot('exfil')

-- expect: refuse dangerous_function
SELECT pg_drop_replication_slot('main')

-- expect: refuse dangerous_function
SELECT * FROM pg_logical_slot_get_changes('exfil', NULL, NULL)

-- expect: refuse dangerous_function
SELECT pg_backup_start('label')

-- ===================================================================== switches: temp tables
-- expect: refuse temp_table
CREATE TEMP TABLE tmp_ids (id int)

-- expect: allow
-- switches: allow_temp_tables
CREATE TEMP TABLE tmp_ids (id int)

-- expect: refuse temp_table
CREATE TEMPORARY TABLE tmp_batch (id int, payload jsonb) ON COMMIT DROP

-- expect: allow
-- switches: allow_temp_tables
CREATE TEMPORARY TABLE tmp_batch (id int, payload jsonb) ON COMMIT DROP

-- expect: refuse temp_table
CREATE LOCAL TEMP TABLE IF NOT EXISTS tmp_x (LIKE users INCLUDING DEFAULTS)

-- expect: allow
-- switches: allow_temp_tables
CREATE LOCAL TEMP TABLE IF NOT EXISTS tmp_x (LIKE users INCLUDING DEFAULTS)

-- expect: refuse temp_table|ddl
CREATE TEMP TABLE tmp_copy AS SELECT id FROM users

-- expect: refuse ddl # the switch covers temporary tables only
-- switches: allow_temp_tables
CREATE UNLOGGED TABLE not_temp (id int)

-- expect: refuse ddl # the switch does not cover other DDL
-- switches: allow_temp_tables
DROP TABLE users

-- expect: refuse dangerous_function # the switch does not open the deny-list
-- switches: allow_temp_tables
CREATE TEMP TABLE tmp_f (a text DEFAULT pg_read_file('/etc/passwd'))

-- ===================================================================== switches: TRUNCATE
-- expect: refuse truncate
TRUNCATE users

-- expect: allow
-- switches: allow_truncate
TRUNCATE users

-- expect: refuse truncate
TRUNCATE TABLE ONLY sessions, tokens RESTART IDENTITY CASCADE

-- expect: allow
-- switches: allow_truncate
TRUNCATE TABLE ONLY sessions, tokens RESTART IDENTITY CASCADE

-- expect: refuse ddl # only TRUNCATE is switched on
-- switches: allow_truncate
TRUNCATE sessions; DROP TABLE sessions

-- ===================================================================== switches: maintenance (VACUUM / ANALYZE)
-- expect: refuse maintenance
VACUUM

-- expect: allow
-- switches: allow_maintenance
VACUUM

-- expect: refuse maintenance
VACUUM (VERBOSE, ANALYZE) users

-- expect: allow
-- switches: allow_maintenance
VACUUM (VERBOSE, ANALYZE) users

-- expect: refuse maintenance
VACUUM FULL orders

-- expect: allow
-- switches: allow_maintenance
VACUUM FULL orders

-- expect: refuse maintenance
ANALYZE

-- expect: allow
-- switches: allow_maintenance
ANALYZE

-- expect: refuse maintenance
ANALYZE VERBOSE users (email, name)

-- expect: allow
-- switches: allow_maintenance
ANALYZE VERBOSE users (email, name)

-- expect: refuse ddl|maintenance # the switch is VACUUM/ANALYZE only
-- switches: allow_maintenance
REINDEX TABLE users

-- expect: refuse ddl|maintenance # the switch is VACUUM/ANALYZE only
-- switches: allow_maintenance
CLUSTER users

-- expect: refuse ddl|maintenance # the switch is VACUUM/ANALYZE only
-- switches: allow_maintenance
CHECKPOINT

-- ===================================================================== switches: CALL
-- expect: refuse call
CALL proc_a(1)

-- expect: allow
-- switches: allow_call=proc_a,proc_b
CALL proc_a(1)

-- expect: allow
-- switches: allow_call=proc_a,proc_b
CALL proc_b()

-- expect: refuse call # not in the list
-- switches: allow_call=proc_a,proc_b
CALL proc_c(1)

-- expect: allow # unquoted names fold to lower case
-- switches: allow_call=proc_a
CALL PROC_A(2)

-- expect: refuse call # quoted upper case is a different procedure name
-- switches: allow_call=proc_a
CALL "PROC_A"(2)

-- expect: refuse dangerous_function # arguments are still checked
-- switches: allow_call=proc_a
CALL proc_a(pg_read_file('/etc/passwd'))

-- expect: refuse rls_toggle # arguments are still checked
-- switches: allow_call=proc_a
CALL proc_a(length(set_config('row_security', 'off', false)))
