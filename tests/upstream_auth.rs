//! Upstream authentication methods: the proxy answers md5 and cleartext
//! password requests as well as SCRAM, and connects in plaintext when
//! `upstream.tls = "disable"`. This binary edits pg_hba.conf, so it has a
//! cluster of its own.

mod common;

use common::*;

fn hba_prepend(lines: &str) {
    let h = harness();
    h.with_cluster(|c| {
        let path = c.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{lines}\n{old}")).expect("write pg_hba.conf");
    });
    h.psql_super("select pg_reload_conf()");
}

#[tokio::test]
async fn md5_and_cleartext_upstream_authentication() {
    let h = harness();
    let db = &h.model.database;
    let rt = &h.model.runtime;
    h.psql_super(&format!(
        "set password_encryption = 'md5';
         create role rg_md5 login password 'md5-pw' in role {rt};
         create role rg_clear login password 'clear-pw' in role {rt};
         grant connect on database {db} to rg_md5, rg_clear;"
    ));
    hba_prepend("host all rg_md5 127.0.0.1/32 md5\nhost all rg_clear 127.0.0.1/32 password");
    for (user, pw, tls) in [
        ("rg_md5", "md5-pw", "disable"),
        ("rg_clear", "clear-pw", "require"),
        ("rg_md5", "md5-pw", "prefer"),
    ] {
        let proxy = h.start_proxy_with(|c| {
            c.replace(
                &format!(
                    "user = \"{rt}\"\npassword = \"{}\"",
                    h.model.runtime_password
                ),
                &format!("user = \"{user}\"\npassword = \"{pw}\""),
            )
            .replace("tls = \"verify-full\"", &format!("tls = \"{tls}\""))
        });
        let client = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
            .await
            .unwrap_or_else(|e| panic!("{user} over upstream tls={tls}: {e}"));
        let row = client
            .query_one(
                "select current_user::text, coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false)",
                &[],
            )
            .await
            .expect("query");
        assert_eq!(row.get::<_, String>(0), user);
        let ssl: bool = row.get(1);
        assert_eq!(ssl, tls != "disable", "upstream TLS for tls={tls}");
    }
    // A wrong upstream password is the proxy's problem, not the client's:
    // not reported as 28P01.
    let proxy = h.start_proxy_with(|c| {
        c.replace(
            &format!("password = \"{}\"", h.model.runtime_password),
            "password = \"wrong\"",
        )
    });
    let e = connect_tls(&proxy.url("web", WEB_PASSWORD, "require"))
        .await
        .map(|_| ())
        .expect_err("wrong upstream password");
    assert_eq!(sqlstate(&e).as_deref(), Some("08004"), "{e}");
}
