-- psql script for benches/soak.sh: statements the runtime policy refuses,
-- each expected to fail with SQLSTATE 42501 while the session stays usable.
-- Lines marked `-- refused` are counted by the script.
\set VERBOSITY verbose
CREATE TABLE soak_evil (x int); -- refused
DROP TABLE pgbench_accounts; -- refused
ALTER TABLE pgbench_accounts DISABLE ROW LEVEL SECURITY; -- refused
SET ROLE app_migrator; -- refused
SET row_security = off; -- refused
GRANT ALL ON pgbench_accounts TO PUBLIC; -- refused
SELECT 'still-usable' AS soak_check;
