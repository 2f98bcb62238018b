//! The runtime policy against an attacker who knows PostgreSQL's grammar,
//! through the proxy against the real cluster. The runtime role is armed
//! first (file-access and signalling roles, membership of the migrator,
//! CREATE on the schema and database, EXECUTE on the file functions), so a
//! statement that slipped past rolegate would visibly execute; every test
//! then checks that nothing did: no new relation, no large object, no file
//! written or program run, the bystander session alive, the session's role
//! and settings unchanged.
//!
//! One test per class of evasion; the spellings inside each are examples
//! of the class, the mechanisms that refuse them are general (see
//! docs/policy.md).

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::raw::{self, Msg, Raw, tags};
use common::*;

/// Give the runtime role everything a slipped statement could use. Runs
/// once per test binary (the cluster is this binary's own).
fn armed() -> &'static Harness {
    static ARMED: OnceLock<()> = OnceLock::new();
    let h = harness();
    ARMED.get_or_init(|| {
        let rt = &h.model.runtime;
        let db = &h.model.database;
        let mig = &h.model.migrator;
        h.psql_super(&format!(
            "grant pg_read_server_files, pg_write_server_files, pg_execute_server_program, \
               pg_signal_backend, pg_read_all_settings to {rt};
             grant {mig} to {rt};
             grant create on schema public to {rt};
             grant create, temporary on database {db} to {rt};
             grant execute on function pg_read_file(text), pg_read_binary_file(text), \
               pg_ls_dir(text), pg_stat_file(text), lo_import(text), lo_export(oid, text), \
               pg_show_all_file_settings(), pg_hba_file_rules(), pg_ident_file_mappings(), \
               pg_config(), pg_reload_conf() to {rt};
             grant select on pg_file_settings, pg_hba_file_rules, pg_ident_file_mappings, \
               pg_config to {rt};"
        ));
        // Shown once, so a failure report says what the role could do.
        let can = h.psql_super(&format!(
            "select pg_has_role('{rt}', 'pg_read_server_files', 'usage') \
               and has_function_privilege('{rt}', 'pg_read_file(text)', 'execute') \
               and pg_has_role('{rt}', '{mig}', 'usage')"
        ));
        assert_eq!(can.trim(), "t", "the runtime role is not armed");
    });
    h
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>())
}

/// What a slipped statement would have changed: relations whose name
/// starts with `prefix` (in any schema, temporary ones included), large
/// objects, the runtime role's memberships and settings.
fn evidence(h: &Harness, prefix: &str) -> String {
    h.psql_super(&format!(
        "select (select count(*) from pg_class where relname like '{prefix}%') || ':' || \
                (select count(*) from pg_largeobject_metadata) || ':' || \
                (select count(*) from pg_db_role_setting) || ':' || \
                (select count(*) from pg_auth_members m join pg_roles r on r.oid = m.member \
                   where r.rolname = '{rt}')",
        rt = h.model.runtime
    ))
}

fn assert_refused(e: &tokio_postgres::Error, sql: &str) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}\n  expected a refusal, got {e}"));
    assert_eq!(db.code().code(), "42501", "{sql}\n  {}", db.message());
    assert!(
        db.message().starts_with("rolegate:"),
        "{sql}\n  refused by the server, not by rolegate: {}",
        db.message()
    );
}

/// Every statement is refused by rolegate, and the session stays usable,
/// in step and unchanged after each.
async fn all_refused(client: &tokio_postgres::Client, cases: &[String]) {
    let h = harness();
    for sql in cases {
        match client.simple_query(sql).await {
            Ok(_) => panic!("not refused, and it ran: {sql}"),
            Err(e) => assert_refused(&e, sql),
        }
        let row = client
            .query_one(
                "select current_user::text, current_setting('row_security'), \
                        current_setting('standard_conforming_strings')",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("session unusable after {sql}: {e}"));
        let (who, rs, scs): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(who, h.model.runtime, "role changed by {sql}");
        assert_eq!(rs, "on", "row_security changed by {sql}");
        assert_eq!(scs, "on", "standard_conforming_strings changed by {sql}");
    }
}

async fn web(proxy: &ProxyProcess) -> tokio_postgres::Client {
    connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .expect("connect through the proxy")
}

/// A table the runtime role may write, for `INSERT … SELECT` forms.
fn sink(prefix: &str) -> String {
    let h = harness();
    let t = format!("{prefix}sink");
    h.psql_migrator(&format!(
        "create table {t} (id serial primary key, v text); grant select, insert on {t} to {rt}; \
         grant usage on sequence {t}_id_seq to {rt}",
        rt = h.model.runtime
    ));
    t
}

/// Class 1: a function reached without call syntax. `x.f` over a relation
/// (or a scalar function in FROM) is `f(x)`; the column reference can hide
/// in any clause, under any wrapper statement.
#[tokio::test(flavor = "multi_thread")]
async fn functions_reached_by_attribute_notation_are_refused() {
    let h = armed();
    let proxy = h.start_proxy();
    let client = web(&proxy).await;
    let p = unique("adv1");
    let t = sink(&p);
    let before = evidence(h, &p);
    let file = "'/etc/hostname'";
    let mut cases = Vec::new();
    for f in [
        "pg_read_file",
        "PG_READ_FILE",
        "\"pg_read_file\"",
        "U&\"pg_read_fil\\0065\"",
        "pg_read_binary_file",
        "pg_stat_file",
        "lo_import",
        "pg_ls_dir",
    ] {
        let from = format!("from btrim({file}) as x");
        cases.extend([
            format!("select x.{f} {from}"),
            format!("select (x).{f} {from}"),
            format!("select ((x)).{f} {from}"),
            format!("select pg_catalog.{f} from btrim({file}) as pg_catalog"),
            format!("select (btrim({file})).{f}"),
            format!("select substring('abc' from length(x.{f})) {from}"),
            format!("select trim(from x.{f}) {from}"),
            format!("select 1 {from} where 'a' is distinct from x.{f}"),
            format!("select 1 {from} order by x.{f}"),
            format!("select count(*) {from} group by x.{f}"),
            format!("select case when true then x.{f} end {from}"),
            format!("explain analyze select x.{f} {from}"),
            format!("with q as (select x.{f} {from}) select * from q"),
            format!("copy (select x.{f} {from}) to stdout"),
            format!("begin; declare c cursor for select x.{f} {from}; fetch c; commit"),
            format!("prepare q_{p} as select x.{f} {from}"),
            format!("insert into {t} (v) select x.{f}::text {from}"),
            format!("insert into {t} (v) values ('a') returning (select x.{f}::text {from})"),
            format!("select * from (select x.{f} {from}) s"),
            format!("select x.{f} from lateral btrim({file}) as x"),
            format!("values ((select x.{f} {from}))"),
        ]);
    }
    all_refused(&client, &cases).await;
    assert_eq!(evidence(h, &p), before, "something executed");
    let rows: i64 = client
        .query_one(&format!("select count(*) from {t}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "a file's content reached the table");
}

/// Class 2: functions whose argument is SQL text, a second language the
/// proxy cannot read, are refused by name wherever the name appears.
#[tokio::test(flavor = "multi_thread")]
async fn functions_that_execute_sql_text_are_refused() {
    let h = armed();
    let proxy = h.start_proxy();
    let client = web(&proxy).await;
    let p = unique("adv2");
    let t = sink(&p);
    let before = evidence(h, &p);
    let mig = &h.model.migrator;
    let rls_off = "select set_config(''row_security'', ''off'', false)";
    let role = format!("select set_config(''role'', ''{mig}'', false)");
    let cases = vec![
        format!("select query_to_xml('{rls_off}', true, true, '')"),
        format!("select query_to_xml_and_xmlschema('{role}', true, true, '')"),
        format!("select query_to_xmlschema('{role}', true, true, '')"),
        format!("select * from ts_stat('{rls_off}::tsvector')"),
        format!("select x.ts_stat from btrim('{role}::tsvector') as x"),
        format!("select (btrim('{role}::tsvector')).ts_stat"),
        format!("select ts_rewrite('a'::tsquery, '{rls_off}::tsquery, ''b''::tsquery')"),
        format!("select table_to_xml('{t}', true, true, '')"),
        "select schema_to_xml('public', true, true, '')".to_string(),
        "select database_to_xml(true, true, '')".to_string(),
        "select cursor_to_xml('c', 1, true, true, '')".to_string(),
        format!("select pg_catalog.query_to_xml('{rls_off}', true, true, '')"),
        format!("select \"query_to_xml\"('{rls_off}', true, true, '')"),
        format!("with q as (select query_to_xml('{role}', true, true, '') v) select * from q"),
        format!("insert into {t} (v) select query_to_xml('{rls_off}', true, true, '')::text"),
        // set_config itself: refused unless its name is a harmless constant.
        "select set_config('row_security', 'off', false)".to_string(),
        format!("select set_config('role', '{mig}', false)"),
        "select set_config('standard_conforming_strings', 'off', false)".to_string(),
        "select set_config(name, 'off', false) from pg_settings where name = 'row_security'"
            .to_string(),
        "select set_config(x, 'off', false) from btrim('row_security') as x".to_string(),
        "select pg_catalog.set_config(lower('ROW_SECURITY'), 'off', false)".to_string(),
        "select x.set_config from pg_settings as x".to_string(),
        "update pg_settings set setting = 'off' where name = 'row_security'".to_string(),
        "update pg_catalog.pg_settings set setting = 'off' where name = 'row_security'"
            .to_string(),
        "with s as (update pg_settings set setting = 'off' where name = 'row_security' returning 1) select * from s".to_string(),
    ];
    all_refused(&client, &cases).await;
    assert_eq!(evidence(h, &p), before, "something executed");
}

/// Class 4: `SELECT … INTO` creates a table; it is read from PostgreSQL's
/// grammar, so neither string continuation nor keyword-named labels hide it.
#[tokio::test(flavor = "multi_thread")]
async fn select_into_is_refused_however_it_is_spelled() {
    let h = armed();
    let proxy = h.start_proxy();
    let client = web(&proxy).await;
    let p = unique("adv4");
    let before = evidence(h, &p);
    let n = |i: u32| format!("{p}_{i}");
    let cases = vec![
        format!("select 'a'\n'b' into {}", n(1)),
        format!("select 'a' -- c\n 'b' into {}", n(2)),
        format!("select 1 as merge into {}", n(3)),
        format!("select 1 as insert into {}", n(4)),
        format!("select 1 merge into {}", n(5)),
        format!("select 1 as select into {}", n(6)),
        format!("select 1 into {} union select 2", n(7)),
        format!("select 1 as union into {}", n(8)),
        format!("prepare transaction as select 1 into {}", n(9)),
        format!("select 1 into temp {}", n(10)),
        format!("select 1 into temporary table {}", n(11)),
        format!("select 1 into unlogged {}", n(12)),
        format!("select 1 into table {}", n(13)),
        format!("select * into {} from (values (1)) v", n(14)),
        format!("select e'\\x41' into {}", n(15)),
        format!("select $$a$$ into {}", n(16)),
        format!("select 1 as \"into\" into {}", n(17)),
        format!("select 1 /* into */ into /**/ {}", n(18)),
        format!("select distinct on (1) 1 into {}", n(19)),
        format!("select 1 as into_ into public.{}", n(20)),
        format!("explain analyze select 1 into {}", n(21)),
        format!("create temp table {} as select 1", n(22)),
        format!("select 1 as x into strict {}", n(23)),
        format!("(select 1 into {})", n(24)),
    ];
    all_refused(&client, &cases).await;
    assert_eq!(evidence(h, &p), before, "a table was created");
}

/// Class 5: views that wrap denied functions read what the function may
/// not, and are denied like them.
#[tokio::test(flavor = "multi_thread")]
async fn views_over_denied_functions_are_refused() {
    let h = armed();
    let proxy = h.start_proxy();
    let client = web(&proxy).await;
    let mut cases = Vec::new();
    for v in [
        "pg_file_settings",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_config",
    ] {
        cases.extend([
            format!("select * from {v}"),
            format!("select * from pg_catalog.{v}"),
            format!("table {v}"),
            format!("select * from \"{v}\""),
            format!("select (select count(*) from {v})"),
            format!("select 1 where exists (select 1 from {v})"),
            format!("copy (select * from {v}) to stdout"),
            format!("copy {v} to stdout"),
        ]);
    }
    all_refused(&client, &cases).await;
}

/// Class 6: one application session signalling another's backend.
#[tokio::test(flavor = "multi_thread")]
async fn other_sessions_cannot_be_signalled() {
    let h = armed();
    let proxy = h.start_proxy();
    let client = web(&proxy).await;
    let bystander = connect_tls(&proxy.url("worker", WORKER_PASSWORD, "require"))
        .await
        .expect("bystander");
    let pid: i32 = bystander
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let mut cases = Vec::new();
    for f in [
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_catalog.pg_terminate_backend",
        "\"pg_terminate_backend\"",
        "PG_CANCEL_BACKEND",
    ] {
        cases.extend([
            format!("select {f}({pid})"),
            format!("select * from {f}({pid})"),
            format!("select {f}(pid) from pg_stat_activity where pid <> pg_backend_pid()"),
        ]);
    }
    cases.extend([
        format!("select x.pg_terminate_backend from int4({pid}) as x"),
        format!("select (int4({pid})).pg_cancel_backend"),
        format!("select pg_catalog.pg_terminate_backend from int4({pid}) as pg_catalog"),
        format!("explain analyze select x.pg_terminate_backend from int4({pid}) as x"),
        "select pg_reload_conf()".to_string(),
        "select x.pg_reload_conf from pg_class as x limit 1".to_string(),
    ]);
    all_refused(&client, &cases).await;
    let again: i32 = bystander
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("the bystander's session was killed")
        .get(0);
    assert_eq!(again, pid, "the bystander's backend changed");
}

/// Raw login as `web` in plaintext.
async fn login_raw(port: u16) -> Raw {
    let db = harness().model.database.clone();
    match Raw::login(port, &[("user", "web"), ("database", &db)], WEB_PASSWORD).await {
        Ok((r, _)) => r,
        Err(m) => panic!("login failed: {:?}", m.field(b'M')),
    }
}

fn error_of(msgs: &[Msg]) -> Option<(String, String)> {
    msgs.iter().find(|m| m.tag == b'E').map(|m| {
        (
            m.sqlstate().unwrap_or_default(),
            m.field(b'M').unwrap_or_default(),
        )
    })
}

/// Class 3: a message pipelined behind work the server has not finished is
/// read under every setting that work could have changed. A text whose
/// meaning flips with `standard_conforming_strings` (or that a multibyte
/// client encoding could read differently) is refused while anything is in
/// flight, and allowed on its own.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_texts_are_read_as_every_setting_could_make_them() {
    let h = armed();
    let proxy = h.start_proxy();
    let p = unique("adv3");
    let before = evidence(h, &p);
    // Harmless with standard strings (one literal); with backslash escapes
    // it is `SELECT 'a'` followed by CREATE TABLE.
    let flips = format!("SELECT 'a\\'' ; CREATE TABLE {p}_q (); --'");
    let flips_one = format!("SELECT 'a\\'', 1 INTO {p}_p --'");
    let multibyte = "SELECT 'é\\'".to_string();

    // Simple protocol: two Query messages in one write, the first slow.
    for text in [&flips, &multibyte] {
        let mut raw = login_raw(proxy.port).await;
        let mut batch = raw::query("SELECT pg_sleep(0.3)");
        batch.extend(raw::query(text));
        raw.send(&batch).await;
        let first = raw.until_ready().await;
        assert_eq!(error_of(&first), None, "{}", tags(&first));
        let second = raw.until_ready().await;
        let (code, message) = error_of(&second)
            .unwrap_or_else(|| panic!("pipelined {text:?} was not refused: {}", tags(&second)));
        assert_eq!(code, "42501", "{message}");
        assert!(message.starts_with("rolegate:"), "{message}");
        // On its own, with nothing in flight, the same text is one literal.
        raw.send(&raw::query(text)).await;
        let alone = raw.until_ready().await;
        assert_eq!(error_of(&alone), None, "{text:?} alone: {}", tags(&alone));
    }

    // Extended protocol: a Parse behind an unsynced Execute.
    let mut raw = login_raw(proxy.port).await;
    let mut batch = raw::parse("", "SELECT pg_sleep(0.3)");
    batch.extend(raw::bind("", ""));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("evil", &flips_one));
    batch.extend(raw::bind("", "evil"));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    let (code, message) =
        error_of(&msgs).unwrap_or_else(|| panic!("pipelined Parse ran: {}", tags(&msgs)));
    assert_eq!(code, "42501", "{message}");
    assert!(message.starts_with("rolegate:"), "{message}");

    assert_eq!(evidence(h, &p), before, "a pipelined statement executed");
    // The settings such a flip needs can't be changed from a runtime session
    // in the first place.
    let client = web(&proxy).await;
    all_refused(
        &client,
        &[
            "set standard_conforming_strings = off".to_string(),
            "set local standard_conforming_strings to off".to_string(),
            "select set_config('standard_conforming_strings', 'off', true)".to_string(),
            "set client_encoding = 'SJIS'".to_string(),
            "reset standard_conforming_strings".to_string(),
        ],
    )
    .await;
}

/// Class 8: a Query or Parse whose text has bytes after an embedded NUL is
/// refused as malformed (never forwarded), and the session carries on.
#[tokio::test(flavor = "multi_thread")]
async fn texts_with_embedded_nul_are_refused() {
    let h = armed();
    let proxy = h.start_proxy();
    let p = unique("adv8");
    let before = evidence(h, &p);
    let mut raw = login_raw(proxy.port).await;
    let hidden = format!("SELECT 1\0CREATE TABLE {p}_n ()\0");
    raw.send(&raw::msg(b'Q', hidden.as_bytes())).await;
    let msgs = raw.until_ready().await;
    let (code, message) =
        error_of(&msgs).unwrap_or_else(|| panic!("NUL-suffixed Query ran: {}", tags(&msgs)));
    assert_eq!(code, "42501", "{message}");

    // Parse: text, NUL, more text, then the parameter count.
    let mut body = b"s\0".to_vec();
    body.extend_from_slice(format!("SELECT 1\0CREATE TABLE {p}_m ()\0").as_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    let mut batch = raw::msg(b'P', &body);
    batch.extend(raw::sync());
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    let (code, message) =
        error_of(&msgs).unwrap_or_else(|| panic!("NUL-suffixed Parse ran: {}", tags(&msgs)));
    assert_eq!(code, "42501", "{message}");

    raw.send(&raw::query("SELECT 1")).await;
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "TDCZ", "the session carries on");
    assert_eq!(evidence(h, &p), before);
}

/// Roles, settings and server files by every other route an attacker
/// tries first; and the two forms that used to be refused wrongly.
#[tokio::test(flavor = "multi_thread")]
async fn the_usual_routes_stay_shut_and_reads_are_not_writes() {
    let h = armed();
    let proxy = h.start_proxy();
    let client = web(&proxy).await;
    let p = unique("adv9");
    let t = sink(&p);
    let before = evidence(h, &p);
    let mig = &h.model.migrator;
    let marker = std::env::temp_dir().join(format!("{p}_marker"));
    let m = marker.display();
    let cases = vec![
        format!("set role {mig}"),
        format!("set role to \"{mig}\""),
        format!("set local role {mig}"),
        "set session authorization postgres".to_string(),
        format!("select set_config('role', '{mig}', false)"),
        "reset session authorization".to_string(),
        "set session characteristics as transaction read write; set role none".to_string(),
        "set row_security = off".to_string(),
        "set row_security to false".to_string(),
        "set local row_security = 0".to_string(),
        format!("copy {t} to '{m}'"),
        format!("copy {t} from program 'touch {m}'"),
        format!("copy (select 1) to program 'touch {m}'"),
        format!("select lo_import('/etc/hostname')"),
        format!("select lo_export(1, '{m}')"),
        format!("create table {p}_x (i int)"),
        format!("alter table {t} disable row level security"),
        format!("alter role {} set row_security = off", h.model.runtime),
        format!("grant {mig} to current_user"),
        "do $$ begin perform 1; end $$".to_string(),
        "load 'auto_explain'".to_string(),
        "listen x; create table y ()".to_string(),
        "select 1; drop owned by current_user".to_string(),
        format!("create temp view {p}_v as select 1"),
        format!("declare c cursor with hold for select 1 into {p}_y"),
    ];
    all_refused(&client, &cases).await;
    assert!(!marker.exists(), "a server file was written");
    assert_eq!(evidence(h, &p), before, "something executed");

    // Reading pg_settings inside a write is a read, and a column named like
    // a denied function's prefix is a column.
    client
        .simple_query(&format!(
            "insert into {t} (v) select setting from pg_settings where name = 'work_mem'"
        ))
        .await
        .expect("INSERT … SELECT setting FROM pg_settings is allowed");
    h.psql_migrator(&format!(
        "create table {p}_links (dblink_id int); grant select, insert on {p}_links to {rt}",
        rt = h.model.runtime
    ));
    client
        .simple_query(&format!(
            "insert into {p}_links (dblink_id) values (1); select dblink_id from {p}_links"
        ))
        .await
        .expect("a column named dblink_id is allowed");
}

/// Give a slow reading time: an idle wait that ends with the proxy's answer.
async fn answer_within(raw: &mut Raw, wait: Duration) -> Vec<Msg> {
    tokio::time::timeout(wait, raw.until_ready())
        .await
        .unwrap_or_else(|_| panic!("no answer within {wait:?}"))
}

/// A statement after a very long text is still read: a refusal at the end
/// of many thousands of harmless statements refuses the whole message.
#[tokio::test(flavor = "multi_thread")]
async fn the_end_of_a_large_text_is_read() {
    let h = armed();
    let proxy = h.start_proxy();
    let p = unique("adv7");
    let before = evidence(h, &p);
    let mut raw = login_raw(proxy.port).await;
    let mut text = String::new();
    for i in 0..60_000 {
        text.push_str(&format!("SELECT {i} AS c{};", i % 97));
    }
    text.push_str(&format!("SELECT 'a'\n'b' INTO {p}_big"));
    raw.send(&raw::query(&text)).await;
    let msgs = answer_within(&mut raw, Duration::from_secs(120)).await;
    let (code, _) = error_of(&msgs).expect("the large text was refused");
    assert_eq!(code, "42501");
    assert_eq!(
        msgs.iter().filter(|m| m.tag == b'D').count(),
        0,
        "a refused message runs none of its statements"
    );
    assert_eq!(evidence(h, &p), before);
}
