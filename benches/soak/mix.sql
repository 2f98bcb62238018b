-- pgbench script for benches/soak.sh: a TPC-B-like write transaction, then a
-- read outside it. Every transaction moves an account by :delta and logs the
-- same :delta in history, so sum(abalance) = sum(delta) at the end proves no
-- transaction was half-applied.
\set aid random(1, 100000)
\set bid 1
\set tid random(1, 10)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
SELECT count(*), sum(abalance) FROM pgbench_accounts WHERE aid BETWEEN :aid AND :aid + 100;
