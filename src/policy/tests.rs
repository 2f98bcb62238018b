//! Classifier-level tests: every rule of PRODUCT.md §5, both paths,
//! statement splitting, switches, resource bounds, and the cache property.

use super::*;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

fn v(sql: &str) -> Verdict {
    classify(sql.as_bytes(), &Switches::default())
}

#[track_caller]
fn allowed(sql: &str) -> Verdict {
    let verdict = v(sql);
    assert!(verdict.allowed, "expected allowed: {sql:?} → {verdict:?}");
    verdict
}

#[track_caller]
fn refused(sql: &str, class: Class) -> Verdict {
    let verdict = v(sql);
    assert!(!verdict.allowed, "expected refused: {sql:?} → {verdict:?}");
    assert_eq!(verdict.class, class, "{sql:?} → {verdict:?}");
    verdict
}

#[track_caller]
fn sqlparser_rejects(sql: &str) {
    assert!(
        Parser::parse_sql(&PostgreSqlDialect {}, sql).is_err(),
        "sqlparser 0.64 now parses {sql:?}; move it to a parser-path test"
    );
}

#[test]
fn allowed_families() {
    for (sql, class) in [
        ("SELECT 1", Class::Read),
        ("select * from t where a = $1", Class::Read),
        ("VALUES (1), (2)", Class::Read),
        ("(SELECT 1) UNION (SELECT 2)", Class::Read),
        ("WITH x AS (SELECT 1) SELECT * FROM x", Class::Read),
        ("INSERT INTO t (a) VALUES ($1) RETURNING id", Class::Write),
        ("UPDATE t SET a = 1 WHERE b = 2", Class::Write),
        ("DELETE FROM t WHERE a = 1", Class::Write),
        (
            "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN UPDATE SET b = s.b",
            Class::Write,
        ),
        (
            "WITH d AS (DELETE FROM t RETURNING *) INSERT INTO u SELECT * FROM d",
            Class::Write,
        ),
        (
            "WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d",
            Class::Write,
        ),
        ("EXPLAIN SELECT 1", Class::Read),
        ("EXPLAIN ANALYZE UPDATE t SET a = 1", Class::Write),
        (
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT 1",
            Class::Read,
        ),
        ("BEGIN", Class::Transaction),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
            Class::Transaction,
        ),
        ("START TRANSACTION", Class::Transaction),
        ("COMMIT", Class::Transaction),
        ("END", Class::Transaction),
        ("ROLLBACK", Class::Transaction),
        ("ABORT", Class::Transaction),
        ("SAVEPOINT s1", Class::Transaction),
        ("RELEASE SAVEPOINT s1", Class::Transaction),
        ("ROLLBACK TO SAVEPOINT s1", Class::Transaction),
        ("SET statement_timeout = '5s'", Class::Session),
        ("SET LOCAL app.current_tenant_id = '42'", Class::Session),
        ("SET TIME ZONE 'UTC'", Class::Session),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            Class::Transaction,
        ),
        ("RESET statement_timeout", Class::Session),
        ("SHOW search_path", Class::Session),
        (
            "SELECT set_config('app.current_tenant_id', $1, true)",
            Class::Read,
        ),
        (
            "PREPARE p (int) AS SELECT * FROM t WHERE a = $1",
            Class::Prepared,
        ),
        ("EXECUTE p(1)", Class::Prepared),
        ("DEALLOCATE p", Class::Prepared),
        ("DECLARE c CURSOR FOR SELECT * FROM t", Class::Cursor),
        ("FETCH 100 FROM c", Class::Cursor),
        ("CLOSE c", Class::Cursor),
        ("LISTEN ch", Class::ListenNotify),
        ("NOTIFY ch, 'payload'", Class::ListenNotify),
        ("UNLISTEN *", Class::ListenNotify),
        ("DISCARD ALL", Class::Discard),
        ("LOCK TABLE t IN SHARE MODE", Class::Lock),
        ("COPY t FROM STDIN", Class::Copy),
        ("COPY t (a, b) TO STDOUT WITH (FORMAT csv)", Class::Copy),
        ("COPY (SELECT * FROM t) TO STDOUT", Class::Copy),
        ("", Class::Empty),
        ("  -- nothing\n ;; /* here */", Class::Empty),
    ] {
        assert_eq!(allowed(sql).class, class, "{sql:?}");
    }
}

#[test]
fn ddl_is_refused() {
    for sql in [
        "CREATE TABLE t (a int)",
        "create table t as select 1",
        "CREATE INDEX i ON t (a)",
        "CREATE VIEW v AS SELECT 1",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
        "CREATE EXTENSION dblink",
        "ALTER TABLE t ADD COLUMN b int",
        "ALTER TABLE t DISABLE ROW LEVEL SECURITY",
        "ALTER SYSTEM SET row_security = off",
        "DROP TABLE t",
        "DROP TABLE IF EXISTS t CASCADE",
        "COMMENT ON TABLE t IS 'x'",
        "SECURITY LABEL ON TABLE t IS 'x'",
        "REINDEX TABLE t",
        "CLUSTER t USING i",
        "REFRESH MATERIALIZED VIEW v",
        "SELECT 1 INTO t",
        "SELECT * INTO TEMP t FROM u",
        "DO $$ BEGIN PERFORM 1; END $$",
        "IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y",
        "LOAD 'auto_explain'",
        "CHECKPOINT",
        "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1",
        "EXPLAIN (ANALYZE) SELECT 1 INTO x",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE MATERIALIZED VIEW v AS SELECT 1",
        "CREATE UNLOGGED TABLE t (a int)",
        "CREATE SCHEMA s",
        "CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; SELECT 2; END",
    ] {
        refused(sql, Class::Ddl);
    }
    let r = refused("DROP TABLE secret_table", Class::Ddl);
    assert_eq!(
        r.reason,
        "DDL is not allowed on a runtime session (DROP TABLE)"
    );
}

#[test]
fn role_changes_are_refused() {
    for sql in [
        "SET ROLE admin",
        "SET SESSION ROLE admin",
        "SET LOCAL ROLE admin",
        "SET SESSION AUTHORIZATION admin",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET ROLE",
        "RESET SESSION AUTHORIZATION",
        "GRANT SELECT ON t TO app",
        "GRANT admin TO app",
        "REVOKE SELECT ON t FROM app",
        "CREATE ROLE r",
        "CREATE USER u PASSWORD 'x'",
        "ALTER ROLE app BYPASSRLS",
        "ALTER USER app SET row_security = off",
        "DROP ROLE r",
        "DROP USER u",
        "CREATE GROUP g",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO app",
        "REASSIGN OWNED BY a TO b",
        "SELECT set_config('role', 'admin', false)",
        "SELECT set_config('session_authorization', 'admin', false)",
    ] {
        refused(sql, Class::RoleChange);
    }
}

#[test]
fn rls_toggles_are_refused_anywhere() {
    for sql in [
        "SET row_security = off",
        "SET LOCAL row_security = off",
        "SET SESSION row_security TO off",
        "SET \"row_security\" = off",
        "SET row_security = of",
        "SELECT set_config('row_security', 'off', false)",
        "SELECT pg_catalog.set_config('row_security', 'off', true)",
        "SELECT set_config($1, 'off', false)",
        "SELECT set_config('row' || '_security', 'off', false)",
        "SELECT set_config((SELECT 'row_security'), 'off', false)",
        "SELECT set_config(name, 'off', false) FROM pg_settings",
        "WITH x AS (SELECT set_config('row_security', 'off', false)) SELECT * FROM x",
        "SELECT * FROM (SELECT set_config('row_security', 'off', false)) s",
        "SELECT * FROM set_config('row_security', 'off', false)",
        "SELECT * FROM t ORDER BY set_config('row_security', 'off', false)",
        "VALUES (set_config('row_security', 'off', false))",
        "INSERT INTO t VALUES (1) RETURNING set_config('row_security', 'off', false)",
        "SELECT lower(set_config('row_security', 'off', false))",
        "EXPLAIN ANALYZE SELECT set_config('row_security', 'off', false)",
        "PREPARE p AS SELECT set_config('row_security', 'off', false)",
        "PREPARE p(text) AS SELECT set_config($1, 'off', false)",
        "DECLARE c CURSOR FOR SELECT set_config('row_security', 'off', false)",
        "COPY (SELECT set_config('row_security', 'off', false)) TO STDOUT",
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'row_security'",
        "SELECT set_config('row_'\n'security', 'off', false)",
        "SELECT set_config(E'row\\x5fsecurity', 'off', false)",
        "SELECT U&\"set\\005fconfig\"('row_security', 'off', false)",
        "SET U&\"row\\005fsecurity\" = off",
        // The lexer path too (array subscript: sqlparser cannot parse).
        "UPDATE t SET a[1] = set_config('row_security', 'off', false)",
    ] {
        refused(sql, Class::RlsToggle);
    }
}

#[test]
fn encoding_changes_are_refused() {
    for sql in [
        "SET client_encoding = 'LATIN1'",
        "SET client_encoding TO DEFAULT",
        "SET NAMES 'SJIS'",
        "RESET client_encoding",
        "SET standard_conforming_strings = off",
        "RESET standard_conforming_strings",
        "SELECT set_config('client_encoding', 'SJIS', false)",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
    ] {
        refused(sql, Class::EncodingChange);
    }
    // No-op "changes" that drivers send are allowed.
    allowed("SET client_encoding TO 'UTF8'");
    allowed("SET NAMES 'utf8'");
    allowed("SET standard_conforming_strings = on");
}

#[test]
fn copy_files_and_programs_are_refused() {
    for sql in [
        "COPY t FROM '/etc/passwd'",
        "COPY t TO '/tmp/x'",
        "COPY t FROM PROGRAM 'id'",
        "COPY (SELECT 1) TO PROGRAM 'curl x'",
        "COPY t (a) FROM '/etc/passwd' WITH (FORMAT csv)",
    ] {
        refused(sql, Class::CopyFile);
    }
}

#[test]
fn dangerous_functions_are_refused_everywhere() {
    for sql in [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT PG_READ_FILE('/etc/passwd')",
        "SELECT \"pg_read_file\"('/etc/passwd')",
        "SELECT pg_catalog.pg_read_file('/etc/passwd')",
        "SELECT \"pg_catalog\".\"pg_read_binary_file\"('/etc/passwd')",
        "SELECT U&\"pg\\005fread\\005ffile\"('/etc/passwd')",
        "SELECT U&\"pg!005fls!005fdir\" UESCAPE '!' ('.')",
        "SELECT (y).pg_ls_dir FROM (SELECT '.'::text) x(y)",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT pg_ls_waldir()",
        "SELECT pg_stat_file('postgresql.conf')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT lo_export(1, '/tmp/x')",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT pg_cancel_backend(1)",
        "SELECT pg_reload_conf()",
        "SELECT pg_switch_wal()",
        "SELECT pg_create_logical_replication_slot('s', 'test_decoding')",
        "SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)",
        "SELECT query_to_xml('SELECT 1', true, true, '')",
        "SELECT dblink_exec('dbname=x', 'DROP TABLE t')",
        "SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)",
        "WITH x AS (SELECT pg_read_file('f')) SELECT * FROM x",
        "SELECT * FROM t WHERE a = (SELECT pg_read_file('f'))",
        "SELECT * FROM t ORDER BY pg_read_file('f')",
        "INSERT INTO t VALUES (pg_read_file('f'))",
        "UPDATE t SET a = 1 RETURNING pg_read_file('f')",
        "SELECT lower(upper(pg_read_file('f')))",
        "EXPLAIN ANALYZE SELECT pg_read_file('f')",
        "PREPARE p AS SELECT pg_read_file($1)",
        "DECLARE c CURSOR FOR SELECT pg_read_file('f')",
        "COPY (SELECT pg_read_file('f')) TO STDOUT",
        "EXECUTE p(pg_read_file('f'))",
        "SELECT t.pg_read_file FROM (SELECT 'f'::text) t",
        "SELECT myschema.pg_read_file('f')",
        "SELECT pg_read_file /* c */ ('f')",
        // Lexer path.
        "UPDATE t SET a[1] = pg_read_file('f')",
        "SELECT xmlelement(name x, pg_read_file('f'))",
    ] {
        refused(sql, Class::DangerousFunction);
    }
    // A denied name is refused wherever it appears as a name: `t.f` calls
    // `f(t)`, and views (pg_hba_file_rules) call the function they wrap.
    for sql in [
        "SELECT pg_ls_dir FROM t",
        "SELECT t.pg_ls_dir FROM t",
        "SELECT * FROM pg_replication_origin_status",
        "SELECT * FROM pg_catalog.pg_hba_file_rules",
        "SELECT * FROM pg_file_settings",
        "SELECT * FROM pg_config",
    ] {
        refused(sql, Class::DangerousFunction);
    }
    // Literals are not names; neither is a longer name.
    allowed("SELECT 'pg_read_file(''x'')'");
    allowed("SELECT dblink_id FROM t");
    let r = refused(
        "SELECT pg_read_file('/secret/path')",
        Class::DangerousFunction,
    );
    assert!(r.reason.contains("pg_read_file") && !r.reason.contains("secret"));
}

#[test]
fn multi_statement_texts_need_every_statement_allowed() {
    allowed("BEGIN; UPDATE t SET a = 1; COMMIT");
    let r = refused("SELECT 1; DROP TABLE t", Class::Ddl);
    assert_eq!(r.statements, 2);
    assert!(r.reason.starts_with("statement 2 of 2: "));
    refused("DROP TABLE t; SELECT 1", Class::Ddl);
    // Splitting the way the server does.
    refused("SELECT 'a'; /* ' */ DROP TABLE t; --'", Class::Ddl);
    refused("SELECT E'\\''; DROP TABLE t; --'", Class::Ddl);
    refused("SELECT 'x\\'; DROP TABLE t; --'", Class::Ddl);
    refused("SELECT $$;$$; DROP TABLE t", Class::Ddl);
    refused("SELECT $a$ $$ $a$; DROP TABLE t", Class::Ddl);
    refused("SELECT \"a;\"\"b\"; DROP TABLE t", Class::Ddl);
    refused("SELECT 1 -- x\n; DROP TABLE t", Class::Ddl);
    refused("SELECT 1 /* */ ; DROP TABLE t", Class::Ddl);
    // …and not where it does not.
    assert_eq!(
        allowed("SELECT 1 /* /* */ ; DROP TABLE t; -- */").statements,
        1
    );
    assert_eq!(allowed("SELECT E'a\\'; DROP TABLE t; --'").statements, 1);
    assert_eq!(allowed("SELECT 'a' -- ;\n").statements, 1);
    assert_eq!(allowed("SELECT $x$ ; DROP TABLE t; $x$").statements, 1);
    assert_eq!(allowed("SELECT 1;;SELECT 2;").statements, 2);
}

#[test]
fn unreadable_text_is_refused() {
    refused("SELECT 'unterminated", Class::Unparseable);
    refused("SELECT 1 /* unterminated", Class::Unparseable);
    refused("SELECT $$ unterminated", Class::Unparseable);
    refused("SELECT \"\" FROM t", Class::Unparseable);
    refused("SELECT 1\0; DROP TABLE t", Class::Unparseable);
    refused("FROBNICATE t", Class::Unparseable);
    refused("SELECT U&\"x\" FROM t", Class::Unparseable);
    refused("SELECT 1abc", Class::Unparseable);
    // A fullwidth semicolon is an identifier character to the server:
    // `1；drop` is "trailing junk", not two statements.
    refused("select 1\u{ff1b}drop table users", Class::Unparseable);
    let r = classify(b"SELECT '\xff'", &Switches::default());
    assert!(!r.allowed);
    assert_eq!(r.class, Class::InvalidUtf8);
}

#[test]
fn switches_each_way() {
    let off = Switches::default();
    let on = Switches {
        allow_temp_tables: true,
        allow_truncate: true,
        allow_maintenance: true,
        allow_call: vec![
            "refresh_stats".into(),
            "app.\"DoIt\"".into(),
            "APP.other".into(),
        ],
    };
    for (sql, class) in [
        ("CREATE TEMP TABLE x (a int)", Class::TempTable),
        ("CREATE TEMPORARY TABLE x AS SELECT 1", Class::TempTable),
        (
            "CREATE LOCAL TEMP TABLE x (a int) ON COMMIT DROP",
            Class::TempTable,
        ),
        ("TRUNCATE t", Class::Truncate),
        (
            "TRUNCATE TABLE ONLY t, u RESTART IDENTITY CASCADE",
            Class::Truncate,
        ),
        ("VACUUM t", Class::Maintenance),
        ("VACUUM (VERBOSE, ANALYZE) t", Class::Maintenance),
        ("ANALYZE t", Class::Maintenance),
        ("CALL refresh_stats()", Class::Call),
        ("CALL Refresh_Stats(1, 'x')", Class::Call),
        ("CALL app.\"DoIt\"()", Class::Call),
        ("CALL app.other()", Class::Call),
    ] {
        let r = classify(sql.as_bytes(), &off);
        assert!(!r.allowed, "{sql}");
        assert_eq!(r.class, class, "{sql}");
        let r = classify(sql.as_bytes(), &on);
        assert!(r.allowed, "{sql}: {r:?}");
        assert_eq!(r.class, class, "{sql}");
    }
    // Procedures not on the list, or with another qualification, stay refused.
    for sql in [
        "CALL other()",
        "CALL app.doit()",
        "CALL public.refresh_stats()",
        "CALL \"Refresh_Stats\"()",
    ] {
        let r = classify(sql.as_bytes(), &on);
        assert!(!r.allowed, "{sql}");
        assert_eq!(r.class, Class::Call);
    }
    // A switch never lets a dangerous part through.
    for sql in [
        "CREATE TEMP TABLE x AS SELECT pg_read_file('f')",
        "CREATE TEMP TABLE x (a text DEFAULT pg_read_file('f'))",
        "CALL refresh_stats(pg_read_file('f'))",
        "CREATE TEMP TABLE x AS SELECT set_config('row_security', 'off', false)",
    ] {
        assert!(!classify(sql.as_bytes(), &on).allowed, "{sql}");
    }
    // Every statement must pass.
    assert!(
        classify(
            b"BEGIN; TRUNCATE t; CREATE TEMP TABLE x (a int); COMMIT",
            &on
        )
        .allowed
    );
    let partial = Switches {
        allow_truncate: true,
        ..Switches::default()
    };
    let r = classify(
        b"BEGIN; TRUNCATE t; CREATE TEMP TABLE x (a int); COMMIT",
        &partial,
    );
    assert!(!r.allowed);
    assert_eq!(r.class, Class::TempTable);
}

/// Real statements sqlparser 0.64 rejects, and what the lexer path makes
/// of them.
#[test]
fn lexer_path_reads_what_sqlparser_cannot() {
    let allowed_cases = [
        ("UPDATE t SET a[1] = 2 WHERE id = $1", Class::Write),
        (
            "UPDATE t SET a[1:2] = '{1,2}', b = $2 WHERE id = $1",
            Class::Write,
        ),
        ("INSERT INTO t (a[1], b) VALUES (1, 2)", Class::Write),
        ("SELECT (t).* FROM t", Class::Read),
        (
            "SELECT (c).f1, (c).* FROM (SELECT ROW(1, 2)::ct AS c) s",
            Class::Read,
        ),
        ("SELECT f(VARIADIC ARRAY[1, 2])", Class::Read),
        (
            "SELECT xmlelement(name foo, xmlattributes('x' AS bar), 'content')",
            Class::Read,
        ),
        (
            "SELECT * FROM ROWS FROM (generate_series(1, 3), generate_series(1, 2))",
            Class::Read,
        ),
        ("TABLE t", Class::Read),
        ("SELECT 'a'\n'b'", Class::Read),
        (
            "SELECT U&'d\\0061t\\+000061', U&'!0041' UESCAPE '!'",
            Class::Read,
        ),
        ("MOVE NEXT IN c", Class::Cursor),
        ("MOVE FORWARD 5 FROM c", Class::Cursor),
        ("SET CONSTRAINTS ALL DEFERRED", Class::Transaction),
        ("PREPARE TRANSACTION 'tx-1'", Class::Transaction),
        ("COMMIT PREPARED 'tx-1'", Class::Transaction),
        ("ROLLBACK PREPARED 'tx-1'", Class::Transaction),
        ("PREPARE p AS UPDATE t SET a[1] = $1", Class::Prepared),
        ("EXPLAIN (ANALYZE) UPDATE t SET a[1] = 2", Class::Write),
        ("DECLARE c CURSOR FOR SELECT (t).* FROM t", Class::Cursor),
        ("COPY (SELECT (t).* FROM t) TO STDOUT", Class::Copy),
        (
            "WITH u AS (UPDATE t SET a[1] = 2 RETURNING *) SELECT * FROM u",
            Class::Write,
        ),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b[1] = 2",
            Class::Write,
        ),
        // Reading pg_settings inside a write is a read.
        (
            "UPDATE t SET a[1] = (SELECT setting FROM pg_settings WHERE name = 'row_security')",
            Class::Write,
        ),
    ];
    for (sql, class) in allowed_cases {
        sqlparser_rejects(sql);
        let r = allowed(sql);
        assert_eq!(r.path, Path::Lexer, "{sql}");
        assert_eq!(r.class, class, "{sql}");
    }
    let refused_cases = [
        (
            "UPDATE t SET a[1] = pg_read_file('f')",
            Class::DangerousFunction,
        ),
        (
            "UPDATE t SET a[1] = 1 WHERE b IN (SELECT 1 INTO x)",
            Class::Ddl,
        ),
        ("SELECT (t).* INTO x FROM t", Class::Ddl),
        (
            "UPDATE pg_catalog.pg_settings SET setting[1] = 'off' WHERE name = 'row_security'",
            Class::RlsToggle,
        ),
        (
            "UPDATE t SET a[1] = 1 WHERE row_security = 1",
            Class::Unparseable,
        ),
        (
            "UPDATE t SET a[1] = 1 WHERE x = (CREATE)",
            Class::Unparseable,
        ),
        ("DO $$ BEGIN PERFORM 1; END $$", Class::Ddl),
        ("CHECKPOINT", Class::Ddl),
        ("REINDEX INDEX i", Class::Ddl),
        ("ALTER SYSTEM SET row_security = off", Class::Ddl),
        ("IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y", Class::Ddl),
        ("REASSIGN OWNED BY a TO b", Class::RoleChange),
        (
            "EXPLAIN (ANALYZE) CREATE TABLE x AS SELECT (t).* FROM t",
            Class::Ddl,
        ),
        ("COPY (SELECT (t).* FROM t) TO PROGRAM 'x'", Class::CopyFile),
        ("VACUUM (VERBOSE, ANALYZE) t", Class::Maintenance),
        ("FROBNICATE everything", Class::Unparseable),
    ];
    for (sql, class) in refused_cases {
        sqlparser_rejects(sql);
        let r = refused(sql, class);
        assert_eq!(r.path, Path::Lexer, "{sql}");
    }
    // The path reported for a refusal is the refused statement's.
    let r = refused("UPDATE t SET a[1] = 1; DROP TABLE t", Class::Ddl);
    assert_eq!(r.path, Path::Parser);
    let r = refused("DROP TABLE t; UPDATE t SET a[1] = 1", Class::Ddl);
    assert_eq!(r.path, Path::Parser);
    // An allowed text reports the lexer if any statement needed it.
    assert_eq!(allowed("SELECT 1; UPDATE t SET a[1] = 1").path, Path::Lexer);
}

#[test]
fn ordinary_sql_needs_only_the_token_reading() {
    for sql in [
        r#"SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2"#,
        "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE SET b = EXCLUDED.b RETURNING *",
        "select u1_0.id, u1_0.name from users u1_0 where u1_0.id = $1",
        "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default",
        "BEGIN",
        "SET extra_float_digits = 3",
    ] {
        assert_eq!(allowed(sql).path, Path::Lexer, "{sql}");
    }
}

#[test]
fn tokens_that_sqlparser_reads_differently_go_to_the_lexer() {
    // sqlparser reads U&"…" as `U & "…"`; the server as one identifier.
    assert_eq!(v("SELECT U&\"a\" FROM t").path, Path::Lexer);
    // sqlparser upper-cases the long s of `ſelect` into the keyword SELECT;
    // to the server it is an identifier (and this a syntax error).
    let r = v("ſelect 1");
    assert!(!r.allowed);
    assert_eq!(r.path, Path::Lexer);
    // The server concatenates 'a' newline 'b'; sqlparser sees two strings.
    assert_eq!(v("SELECT 'a'\n'b'").path, Path::Lexer);
}

#[test]
fn deep_nesting_goes_to_the_lexer_path() {
    let deep = format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200));
    sqlparser_rejects(&deep);
    let r = allowed(&deep);
    assert_eq!(r.path, Path::Lexer);
    let deep_bad = format!(
        "SELECT {}pg_read_file('f'){}",
        "(".repeat(200),
        ")".repeat(200)
    );
    refused(&deep_bad, Class::DangerousFunction);
}

/// Long operator chains build left-deep ASTs that sqlparser does not count
/// against its recursion limit; the token cap keeps them off the parser so
/// neither parsing nor dropping the AST can overflow a 2 MiB stack.
#[test]
fn huge_inputs_do_not_overflow_a_small_stack() {
    let handle = std::thread::Builder::new().stack_size(2 << 20).spawn(|| {
        let n = parsed::MAX_PARSER_TOKENS / 2 - 4;
        // Flat in PostgreSQL's tree (AND lists, VALUES rows): allowed.
        for sql in [
            format!("SELECT 1 WHERE a = 1{}", " AND a = 1".repeat(n / 4)),
            format!(
                "INSERT INTO t VALUES {}",
                vec!["(1, 'x')"; 50_000].join(",")
            ),
        ] {
            assert!(classify(sql.as_bytes(), &Switches::default()).allowed);
        }
        // Deep in PostgreSQL's tree (left-deep operator and UNION chains):
        // whatever the verdict, reading them must not overflow the stack;
        // past the tree depth rolegate reads they are refused as
        // unreadable.
        for sql in [
            format!("SELECT 1{}", "+1".repeat(n)),
            format!("SELECT 1{}", "::int".repeat(n / 2)),
            format!("SELECT 1{}", " UNION SELECT 1".repeat(n / 3)),
            format!("SELECT a{}", "->'x'".repeat(n)),
            format!("SELECT 1{}", "+1".repeat(200_000)),
            format!("SELECT 1{}", " UNION SELECT 1".repeat(50_000)),
        ] {
            let v = classify(sql.as_bytes(), &Switches::default());
            assert!(v.allowed || v.class == Class::Unparseable, "{v:?}");
        }
    });
    assert!(handle.is_ok_and(|h| h.join().is_ok()));
}

#[test]
fn time_grows_linearly_with_size() {
    let sw = Switches::default();
    // Best of three runs: other tests share the CPU.
    let time = |n: usize| {
        let sql = format!("INSERT INTO t VALUES {}", vec!["($1, 'x', 2)"; n].join(","));
        (0..3)
            .map(|_| {
                let t = std::time::Instant::now();
                assert!(classify(sql.as_bytes(), &sw).allowed);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let small = time(20_000).max(1e-4);
    let big = time(80_000);
    // 4× the input: allow generous noise, but not quadratic (16×).
    assert!(big < small * 10.0, "20k rows {small}s, 80k rows {big}s");
}

#[test]
fn reasons_never_echo_the_statement() {
    let marker = "zq7secret";
    for sql in [
        format!("DROP TABLE {marker}"),
        format!("SELECT pg_read_file('{marker}')"),
        format!("SELECT set_config('{marker}' || 'x', 'off', false)"),
        format!("SET row_security = {marker}"),
        format!("SET client_encoding = '{marker}'"),
        format!("COPY t FROM '/{marker}'"),
        format!("CALL {marker}()"),
        format!("SELECT 1 INTO {marker}"),
        format!("GRANT {marker} TO app"),
        format!("CREATE TABLE \"{marker}\" (a int)"),
        format!("FROBNICATE {marker}"),
        format!("SELECT '{marker}"),
        format!("UPDATE t SET a[1] = 1 WHERE b = ({marker} CREATE)"),
        format!("SELECT 1; DROP TABLE {marker}"),
    ] {
        let r = v(&sql);
        assert!(!r.allowed, "{sql}");
        assert!(!r.reason.contains(marker), "{sql}: {}", r.reason);
    }
}

#[test]
fn fingerprints_never_contain_literals() {
    let fp = fingerprint(b"SELECT a FROM t WHERE b = 'hunter2' AND c = 31337 AND d = E'x\\'y' AND e = $$z$$ AND f = $1");
    assert_eq!(
        fp,
        "select a from t where b = ? and c = ? and d = ? and e = ? and f = $1"
    );
    assert!(!fingerprint(b"SELECT 'open string hunter2").contains("hunter2"));
    assert!(!fingerprint(b"SELECT '\xff hunter2'").contains("hunter2"));
    assert_eq!(fingerprint(b"SELECT   1 -- c\n"), fingerprint(b"select 2"));
}

/// A cached verdict is exactly what a fresh classification gives, for any
/// mix of texts and switches, including after evictions.
#[test]
fn cache_equals_fresh_classification() {
    let texts: Vec<Vec<u8>> = [
        "SELECT 1",
        "select 1",
        "SELECT 1 ",
        "SELECT * FROM t WHERE a = $1",
        "UPDATE t SET a[1] = 2",
        "DROP TABLE t",
        "SELECT 1; DROP TABLE t",
        "TRUNCATE t",
        "BEGIN; TRUNCATE t; COMMIT",
        "CREATE TEMP TABLE x (a int)",
        "VACUUM t",
        "CALL p()",
        "CALL app.q(1)",
        "SELECT set_config('row_security', 'off', false)",
        "SELECT set_config('app.x', 'off', false)",
        "SELECT set_config('app.y', 'off', false)",
        "SET client_encoding = 'UTF8'",
        "SET client_encoding = 'LATIN1'",
        "COPY t FROM STDIN",
        "COPY t FROM '/x'",
        "SELECT pg_read_file('x')",
        "",
        "SELECT '",
        "BEGIN; CREATE TEMP TABLE x (a int); TRUNCATE x; CALL p(); COMMIT",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain(std::iter::once(b"SELECT '\xfe'".to_vec()))
    .collect();
    let switch_sets = [
        Switches::default(),
        Switches {
            allow_truncate: true,
            ..Switches::default()
        },
        Switches {
            allow_temp_tables: true,
            allow_maintenance: true,
            ..Switches::default()
        },
        Switches {
            allow_temp_tables: true,
            allow_truncate: true,
            allow_maintenance: true,
            allow_call: vec!["p".into(), "app.q".into()],
        },
        Switches {
            allow_call: vec!["P".into()],
            ..Switches::default()
        },
    ];
    // xorshift64*: deterministic, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for cache in [
        VerdictCache::new(10_000),
        VerdictCache::with_limits(8, 4096),
    ] {
        let mut hits = 0;
        for _ in 0..5_000 {
            let text = &texts[(next() % texts.len() as u64) as usize];
            let sw = &switch_sets[(next() % switch_sets.len() as u64) as usize];
            let (cached, hit) = cache.classify(text, sw);
            hits += usize::from(hit);
            assert_eq!(
                *cached,
                classify(text, sw),
                "{:?} {sw:?}",
                String::from_utf8_lossy(text)
            );
        }
        assert!(hits > 0);
    }
}

/// Random soups of SQL fragments (quotes, dollar quotes, comments, escapes,
/// non-ASCII, keywords): classification never panics, and nothing allowed
/// ever contains a statement the server would read as refused.
#[test]
fn random_fragments_never_panic_or_slip_through() {
    const FRAGMENTS: &[&str] = &[
        "SELECT ",
        "select",
        " 1",
        "'",
        "''",
        "E'",
        "\\",
        "\\'",
        "$$",
        "$a$",
        "$1",
        "$",
        "/*",
        "*/",
        "--",
        "\n",
        "\r",
        " ",
        ";",
        "(",
        ")",
        ",",
        ".",
        "\"",
        "U&",
        "u&'",
        "N'",
        "B'",
        "X'",
        "DROP TABLE t",
        "pg_read_file(",
        "set_config(",
        "'row_security'",
        "INTO",
        "INSERT",
        "UPDATE t SET a[1] = 2",
        "é",
        "ſelect",
        "\u{a0}",
        "::",
        "->>",
        "@>",
        "=",
        "+",
        "-",
        "*",
        "WITH x AS (",
        "COPY t FROM ",
        "STDIN",
        "PROGRAM",
        "EXPLAIN ANALYZE ",
        "PREPARE p AS ",
        "CREATE ",
        "TEMP TABLE x",
        "CALL p()",
        "TRUNCATE t",
        "SET ",
        "row_security",
        "ROLE x",
        "= off",
        "BEGIN",
        "COMMIT",
        "x",
        "t",
        "0x1F",
        "1.5e3",
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    };
    let sw = Switches::default();
    let mut allowed_count = 0;
    for _ in 0..20_000 {
        let n = 1 + (next() % 12) as usize;
        let sql: String = (0..n)
            .map(|_| FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize])
            .collect();
        let verdict = classify(sql.as_bytes(), &sw);
        let _ = fingerprint(sql.as_bytes());
        if !verdict.allowed {
            continue;
        }
        allowed_count += 1;
        // Re-derive the server's reading and check what was allowed.
        let scan = lex::scan(&sql);
        assert!(scan.error.is_none(), "{sql:?}");
        for range in lex::split(&scan.tokens) {
            let toks = &scan.tokens[range];
            let head = heads::head(&sql, toks);
            assert!(
                !matches!(
                    head,
                    heads::Head::Ddl(_) | heads::Head::RoleDdl(_) | heads::Head::Unknown
                ),
                "{sql:?}"
            );
            for (i, t) in toks.iter().enumerate() {
                let name = t.ident_value(&sql);
                let call = toks.get(i + 1).is_some_and(|n| n.kind == lex::Kind::LParen);
                assert!(!(call && denylist::denied(&name).is_some()), "{sql:?}");
                assert!(
                    !name.eq_ignore_ascii_case("set_config")
                        || !toks.iter().any(|t| {
                            t.plain_str_value(&sql)
                                .is_some_and(|v| v.eq_ignore_ascii_case("row_security"))
                        }),
                    "{sql:?}"
                );
                assert!(
                    !(t.is_kw(&sql, "into") && (i == 0 || !toks[i - 1].is_kw(&sql, "insert"))),
                    "{sql:?}"
                );
            }
        }
    }
    eprintln!("allowed {allowed_count} of 20000");
    assert!(allowed_count > 200, "{allowed_count}");
}

/// Found by the `classify` fuzz target: a NUL inside a quoted identifier.
#[test]
fn nul_inside_a_quoted_identifier_is_refused() {
    let v = crate::policy::classify(b"SELECT \"a\0b\" FROM t", &Switches::default());
    assert!(!v.allowed);
    assert_eq!(v.class, Class::Unparseable);
}

#[test]
fn large_texts_are_read_statement_by_statement() {
    let sw = Switches::default();
    let body = "SELECT 1; INSERT INTO t VALUES ('a;b', $$;$$); ".repeat(10_000);
    assert!(body.len() >= LARGE_TEXT);
    let v = classify(body.as_bytes(), &sw);
    assert!(v.allowed, "{v:?}");
    assert_eq!(v.statements, 20_000);
    for bad in [
        "DROP TABLE t",
        "SELECT x.pg_read_file FROM btrim('/etc/hostname') x",
        "SELECT 1 AS insert INTO t",
        "SELECT 'a' \n 'b' INTO t",
    ] {
        let text = format!("{body}{bad}; {body}");
        let v = classify(text.as_bytes(), &sw);
        assert!(!v.allowed, "{bad}");
        assert!(v.reason.starts_with("statement 20001 of "), "{}", v.reason);
    }
    // A string that hides a `;` from a naive splitter stays one statement.
    let text = format!("{body}SELECT 'x; DROP TABLE t'");
    assert!(classify(text.as_bytes(), &sw).allowed);
    let text = format!("{body}SELECT 'unterminated; DROP TABLE t");
    assert!(!classify(text.as_bytes(), &sw).allowed);
}

#[test]
fn pipelined_texts_must_be_harmless_in_every_reading() {
    // Harmless under standard_conforming_strings = on, DDL under off.
    let sql = b"SELECT 'a\\'' ; CREATE TABLE pwn(); --'";
    assert!(classify(sql, &Switches::default()).allowed);
    assert!(check_other_readings(sql).is_some());
    // Under off the server rejects it outright: nothing to fear.
    assert!(check_other_readings(b"SELECT 'C:\\'").is_none());
    // No backslash: every reading is the same.
    assert!(check_other_readings(b"SELECT 'a''b', E'x' -- \xc3\xa9").is_none());
    assert!(check_other_readings(b"SELECT E'\\n'").is_none());
    // A backslash a multi-byte client encoding could swallow.
    assert!(check_other_readings("SELECT E'\u{e9}\\'' ; DROP TABLE t; --'".as_bytes()).is_some());
}
