//! StartupMessage filtering for runtime identities.
//!
//! A runtime session may not start with row security off, as another role,
//! with an encoding or string mode that would make the proxy's reading of
//! statement text differ from the server's, or as a replication connection.
//! Settings arrive two ways and both are checked: as startup parameters
//! (`row_security=off`) and inside `options`, which the server splits like
//! `pg_split_opts` (whitespace separates, a backslash takes the next
//! character literally) and reads like the postgres command line: `-c
//! name=value`, `-cname=value`, `--name=value`, with `-` in names meaning
//! `_`. Any other switch in `options` is refused: it could only be a
//! server switch this check does not interpret.

use super::settings::{self, Protected};

/// Check a StartupMessage's parameters (name, value). The error names the
/// offending parameter but never its value.
pub fn check_startup(params: &[(String, String)]) -> Result<(), String> {
    for (name, value) in params {
        if name.eq_ignore_ascii_case("options") {
            check_options(value)?;
        } else if name.eq_ignore_ascii_case("replication") {
            if !["false", "0", "off", "no"]
                .iter()
                .any(|v| v.eq_ignore_ascii_case(value.trim()))
            {
                return Err(
                    "replication connections are not allowed for a runtime identity".to_owned(),
                );
            }
        } else {
            check_setting(name, value, "startup parameter")?;
        }
    }
    Ok(())
}

/// Settings that load shared libraries when a session starts.
const LOADS_LIBRARIES: &[&str] = &[
    "local_preload_libraries",
    "session_preload_libraries",
    "shared_preload_libraries",
    "jit_provider",
];

/// Check one setting given at startup.
fn check_setting(name: &str, value: &str, how: &str) -> Result<(), String> {
    let name = name.replace('-', "_");
    if !settings::is_plain_name(&name) {
        return Err(format!(
            "{how} with an unusual name is not accepted for a runtime identity"
        ));
    }
    let Some(p) = settings::protected(&name) else {
        if name.eq_ignore_ascii_case("replication") {
            return Err(format!(
                "{how} replication is not allowed for a runtime identity"
            ));
        }
        // Set at startup, these load shared libraries into the backend
        // before the first statement (`local_preload_libraries` is settable
        // by any role); a runtime session has no business loading code.
        if LOADS_LIBRARIES.iter().any(|l| name.eq_ignore_ascii_case(l)) {
            return Err(format!(
                "{how} {} (it loads libraries) is not allowed for a runtime identity",
                name.to_ascii_lowercase()
            ));
        }
        return Ok(());
    };
    let ok = match p {
        Protected::ClientEncoding => settings::is_utf8_name(value.trim()),
        Protected::StandardConformingStrings => settings::is_on(value.trim()),
        Protected::RowSecurity | Protected::Role | Protected::SessionAuthorization => false,
    };
    if ok {
        return Ok(());
    }
    let label = match p {
        Protected::RowSecurity => "row_security",
        Protected::Role => "role",
        Protected::SessionAuthorization => "session_authorization",
        Protected::ClientEncoding => "client_encoding (only UTF8 is accepted)",
        Protected::StandardConformingStrings => "standard_conforming_strings (only on is accepted)",
    };
    Err(format!(
        "{how} {label} is not allowed for a runtime identity"
    ))
}

/// `pg_split_opts`: whitespace-separated, backslash escapes the next char.
fn split_opts(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| is_c_space(*c)) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut tok = String::new();
        while let Some(c) = chars.next() {
            if is_c_space(c) {
                break;
            }
            if c == '\\' {
                match chars.next() {
                    Some(n) => tok.push(n),
                    None => break,
                }
            } else {
                tok.push(c);
            }
        }
        out.push(tok);
    }
    out
}

/// C `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn check_options(options: &str) -> Result<(), String> {
    let args = split_opts(options);
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let setting = if let Some(rest) = arg.strip_prefix("--") {
            rest.to_owned()
        } else if let Some(rest) = arg.strip_prefix("-c") {
            if rest.is_empty() {
                i += 1;
                match args.get(i) {
                    Some(next) => next.clone(),
                    None => return Err("startup option -c without a setting".to_owned()),
                }
            } else {
                rest.to_owned()
            }
        } else {
            return Err(
                "startup options other than -c name=value and --name=value are not accepted for a runtime identity"
                    .to_owned(),
            );
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(
                "startup option without a value is not accepted for a runtime identity".to_owned(),
            );
        };
        if name.is_empty() {
            return Err(
                "startup option without a name is not accepted for a runtime identity".to_owned(),
            );
        }
        check_setting(name, value, "startup option")?;
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn ordinary_startups_pass() {
        assert!(
            check_startup(&p(&[
                ("user", "app"),
                ("database", "db"),
                ("application_name", "x")
            ]))
            .is_ok()
        );
        assert!(check_startup(&p(&[("client_encoding", "UTF8")])).is_ok());
        assert!(check_startup(&p(&[("client_encoding", "unicode")])).is_ok());
        assert!(check_startup(&p(&[("local_preload_libraries", "auto_explain")])).is_err());
        assert!(check_startup(&p(&[("options", "-c local-preload-libraries=x")])).is_err());
        assert!(check_startup(&p(&[("options", "--session_preload_libraries=x")])).is_err());
        assert!(check_startup(&p(&[("standard_conforming_strings", "on")])).is_ok());
        assert!(check_startup(&p(&[("replication", "false")])).is_ok());
        assert!(
            check_startup(&p(&[(
                "options",
                "-c statement_timeout=5s --search-path=public"
            )]))
            .is_ok()
        );
        assert!(check_startup(&p(&[("options", "  -c  app.tenant=a\\ b  ")])).is_ok());
        assert!(check_startup(&p(&[("options", "")])).is_ok());
        assert!(check_startup(&p(&[("options", "-cclient_encoding=utf8")])).is_ok());
    }

    #[test]
    fn protected_settings_refused() {
        for params in [
            p(&[("row_security", "off")]),
            p(&[("ROW_SECURITY", "on")]),
            p(&[("role", "admin")]),
            p(&[("session_authorization", "admin")]),
            p(&[("client_encoding", "LATIN1")]),
            p(&[("client_encoding", "auto")]),
            p(&[("standard_conforming_strings", "off")]),
            p(&[("replication", "database")]),
            p(&[("replication", "true")]),
            p(&[("Replication", "1")]),
            p(&[("options", "-c row_security=off")]),
            p(&[("options", "-crow_security=off")]),
            p(&[("options", "--row-security=off")]),
            p(&[("options", "--ROW_SECURITY=off")]),
            p(&[("options", "-c statement_timeout=1 -c role=admin")]),
            p(&[("options", "-c\\ role=admin")]),
            p(&[(
                "options",
                "-c app.x=a\\ -c\\ row_security=off -c session-authorization=x",
            )]),
            p(&[("options", "-c client_encoding=SJIS")]),
            p(&[("options", "-c standard_conforming_strings=off")]),
            p(&[("options", "-e")]),
            p(&[("options", "-B 100")]),
            p(&[("options", "-c")]),
            p(&[("options", "--role")]),
            p(&[("options", "--")]),
            p(&[("options", "dbname")]),
            p(&[("OPTIONS", "-c role=x")]),
            p(&[("options", "-c replication=true")]),
        ] {
            let r = check_startup(&params);
            assert!(r.is_err(), "{params:?}");
            let msg = r.err().unwrap_or_default();
            assert!(!msg.contains("admin") && !msg.contains("SJIS"), "{msg}");
        }
    }

    #[test]
    fn split_like_pg_split_opts() {
        assert_eq!(split_opts(" -c a=b\\ c  -d "), vec!["-c", "a=b c", "-d"]);
        assert_eq!(split_opts("a\\\\b x\\"), vec!["a\\b", "x"]);
    }
}
