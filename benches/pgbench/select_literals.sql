-- select_literals: a literal-heavy, read-only workload for `pgbench -M simple`
-- (benches/pgbench.sh). Every statement carries fresh random numeric and
-- string literals (pgbench substitutes :name inside quotes too), so no two
-- statement texts repeat: each one is new to a proxy's verdict cache, and
-- differs from the last in its string literals, not only its integers.
-- Both statements are plain reads a runtime role may run; a refusal would
-- abort the pgbench client, so a clean run (0 failed transactions, no
-- aborted client) shows every statement passed the policy.
-- One statement per line: benches/pgbench.sh counts the lines ending in ";".
\set aid random(1, 100000 * :scale)
\set a2 random(1, 100000 * :scale)
\set a3 random(1, 100000 * :scale)
\set a4 random(1, 100000 * :scale)
\set a5 random(1, 100000 * :scale)
\set bal random(1, 99999999)
\set tag random(1, 2147483647)
\set bid random(1, :scale)
SELECT aid, bid, abalance FROM pgbench_accounts WHERE aid IN (:aid, :a2, :a3, :a4, :a5) AND abalance > -:bal AND filler <> 'req-:tag' ORDER BY aid;
SELECT a.aid, a.abalance + 0.:bal AS adjusted, b.bbalance, 'trace :tag/:bal' AS trace FROM pgbench_accounts a JOIN pgbench_branches b ON b.bid = a.bid WHERE a.aid = :aid AND b.bid <= :bid + :scale AND a.filler NOT LIKE 'zz:tag%';
