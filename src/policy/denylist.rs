//! The documented deny-list of dangerous functions and its matcher.
//!
//! A runtime session may call any function except these. Each entry is a
//! function name in lower case; an entry ending in `*` is a prefix. Each
//! entry is listed with why it is denied, which refusal reasons quote.
//! Matching ignores ASCII case (also for quoted names, which is stricter
//! than PostgreSQL: `"PG_READ_FILE"` names no existing function, refusing it
//! costs nothing) and ignores the schema: `pg_catalog.pg_read_file`,
//! `"pg_read_file"` and `myschema.pg_read_file` are all refused.
//!
//! Left allowed on purpose, because they are ordinary application SQL:
//! advisory locks (`pg_advisory_*`), `pg_notify`, `pg_sleep`,
//! `current_setting`, `xpath`/`xmltable`, `txid_*`/`pg_current_xact_id`,
//! and large-object *data* functions (`lo_create`, `lo_open`, `loread`,
//! `lowrite`, `lo_put`, `lo_get`, `lo_from_bytea`, `lo_unlink`): they touch
//! only large objects, which are database rows with their own privileges.
//! Only the two large-object functions that touch *server files*
//! (`lo_import`, `lo_export` with a server path) are denied.
//!
//! `set_config` is not here: it is allowed with a constant, ordinary setting
//! name and checked separately (see `guards`).

// Why an entry is denied, as refusal reasons put it.
const FILES: &str = "it reaches the server's files";
const RAW: &str = "it reads raw pages or WAL around row-level security";
const SESSIONS: &str = "it reaches other sessions";
const STATE: &str = "it changes the server's configuration or state";
const RUNS_SQL: &str = "it executes SQL text the proxy cannot check";
const DOCUMENTS: &str = "it reads documents from files or URLs";
const CONNECTS: &str = "it connects to another server";
const CONFIG: &str = "it reads the server's configuration";

/// Every entry of [`DENIED_FUNCTIONS`], in its order, with why it is denied.
const DENIED: &[(&str, &str)] = &[
    // Server files: read, list or stat files on the database server.
    ("pg_read_file", FILES),
    ("pg_read_binary_file", FILES),
    ("pg_stat_file", FILES),
    ("pg_ls_*", FILES), // pg_ls_dir, pg_ls_logdir, pg_ls_waldir, pg_ls_tmpdir, …
    ("pg_current_logfile", FILES),
    ("pg_show_all_file_settings", FILES), // behind the pg_file_settings view
    ("pg_hba_file_rules", FILES),
    ("pg_ident_file_mappings", FILES),
    ("lo_import", FILES), // server-side: reads a server file into a large object
    ("lo_export", FILES), // server-side: writes a large object to a server file
    // adminpack (before PostgreSQL 17): write, rename, remove server files.
    ("pg_file_*", FILES),
    ("pg_logdir_ls", FILES),
    // Raw storage and WAL readers (pageinspect, pg_walinspect): they read
    // pages and WAL records directly, around row-level security.
    ("get_raw_page", RAW),
    ("bt_page_items", RAW),
    ("bt_multi_page_stats", RAW),
    ("pg_get_wal_*", RAW),
    // Other sessions: signal, cancel, terminate or inspect other backends.
    ("pg_cancel_backend", SESSIONS),
    ("pg_terminate_backend", SESSIONS),
    ("pg_signal_backend", SESSIONS),
    ("pg_log_backend_memory_contexts", SESSIONS),
    // Server configuration and server state.
    ("pg_reload_conf", STATE),
    ("pg_rotate_logfile", STATE),
    ("pg_rotate_logfile_old", STATE),
    ("pg_promote", STATE),
    ("pg_switch_wal", STATE),
    ("pg_switch_xlog", STATE),
    ("pg_create_restore_point", STATE),
    ("pg_backup_start", STATE),
    ("pg_backup_stop", STATE),
    ("pg_start_backup", STATE),
    ("pg_stop_backup", STATE),
    ("pg_wal_replay_pause", STATE),
    ("pg_wal_replay_resume", STATE),
    ("pg_xlog_replay_pause", STATE),
    ("pg_xlog_replay_resume", STATE),
    ("pg_log_standby_snapshot", STATE),
    ("pg_import_system_collations", STATE),
    ("pg_nextoid", STATE),
    ("pg_stat_reset*", STATE), // pg_stat_reset, _shared, _single_table_counters, …
    ("pg_stat_statements_reset", STATE),
    ("pg_truncate_visibility_map", STATE),
    // Planner statistics writers (PostgreSQL 18): catalog changes like DDL.
    ("pg_restore_relation_stats", STATE),
    ("pg_restore_attribute_stats", STATE),
    ("pg_clear_relation_stats", STATE),
    ("pg_clear_attribute_stats", STATE),
    // Replication slots, replication origins, logical decoding.
    ("pg_create_physical_replication_slot", STATE),
    ("pg_create_logical_replication_slot", STATE),
    ("pg_drop_replication_slot", STATE),
    ("pg_copy_physical_replication_slot", STATE),
    ("pg_copy_logical_replication_slot", STATE),
    ("pg_replication_slot_advance", STATE),
    ("pg_sync_replication_slots", STATE),
    ("pg_replication_origin_*", STATE),
    ("pg_logical_*", STATE), // pg_logical_slot_get_changes, pg_logical_emit_message, …
    // Functions that execute a SQL string passed as an argument: the string
    // is a statement this classifier never sees.
    ("query_to_xml", RUNS_SQL),
    ("query_to_xml_and_xmlschema", RUNS_SQL),
    ("query_to_xmlschema", RUNS_SQL),
    ("cursor_to_xml", RUNS_SQL),
    ("cursor_to_xmlschema", RUNS_SQL),
    ("table_to_xml", RUNS_SQL),
    ("table_to_xml_and_xmlschema", RUNS_SQL),
    ("table_to_xmlschema", RUNS_SQL),
    ("schema_to_xml*", RUNS_SQL),
    ("database_to_xml*", RUNS_SQL),
    ("ts_stat", RUNS_SQL),         // ts_stat(sqlquery text, …)
    ("ts_rewrite", RUNS_SQL),      // ts_rewrite(query, select text) runs the select
    ("crosstab*", RUNS_SQL),       // tablefunc: crosstab(source_sql text, …)
    ("connectby", RUNS_SQL),       // tablefunc: builds and runs SQL from its arguments
    ("xpath_table", RUNS_SQL),     // xml2: builds and runs SQL from its arguments
    ("xslt_process", DOCUMENTS),   // xml2: fetches stylesheets and documents by URL or file
    ("pg_background_*", RUNS_SQL), // pg_background: runs SQL text in a background worker
    // Connections to other servers (dblink runs arbitrary SQL elsewhere,
    // possibly as another role, and can loop back to this server).
    ("dblink", CONNECTS),
    ("dblink_exec", CONNECTS),
    ("dblink_connect", CONNECTS),
    ("dblink_connect_u", CONNECTS),
    ("dblink_disconnect", STATE),
    ("dblink_open", CONNECTS),
    ("dblink_fetch", STATE),
    ("dblink_close", STATE),
    ("dblink_get_connections", STATE),
    ("dblink_send_query", CONNECTS),
    ("dblink_is_busy", STATE),
    ("dblink_get_result", STATE),
    ("dblink_cancel_query", STATE),
    ("dblink_error_message", STATE),
    ("dblink_get_notify", STATE),
    ("dblink_get_pkey", STATE),
    ("dblink_build_sql_insert", STATE),
    ("dblink_build_sql_delete", STATE),
    ("dblink_build_sql_update", STATE),
    ("dblink_current_query", STATE),
    // Views that wrap denied functions (selecting from them calls the
    // function): refused like the function.
    // (pg_file_settings is covered by pg_file_*.)
    ("pg_config", CONFIG),
    // Binary-upgrade support (catalog surgery).
    ("binary_upgrade_*", STATE),
];

/// Functions a runtime session may not call. `*` at the end marks a prefix.
/// The list, with each entry's reason, is `DENIED` in `denylist.rs`.
pub const DENIED_FUNCTIONS: &[&str] = &entry_names::<{ DENIED.len() }>();

/// The names of [`DENIED`]'s entries, as an array (computed at compile time).
const fn entry_names<const N: usize>() -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = DENIED[i].0;
        i += 1;
    }
    names
}

/// The deny-list entry that `name` matches, if any. `name` is compared
/// ignoring ASCII case.
pub(crate) fn denied(name: &str) -> Option<&'static str> {
    // Every entry is ASCII and at least 5 bytes. A table of the entries'
    // first two bytes rejects the usual name (`id`, `users`, `created_at`)
    // with one load instead of a scan of the list: this runs for every
    // name of every statement classified.
    let b = name.as_bytes();
    if b.len() < 5 {
        return None;
    }
    let i = pair_index(b[0], b[1]);
    if STARTS[i / 64] & (1 << (i % 64)) == 0 {
        return None;
    }
    DENIED_FUNCTIONS
        .iter()
        .copied()
        .find(|entry| match entry.strip_suffix('*') {
            Some(prefix) => name
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
            None => name.eq_ignore_ascii_case(entry),
        })
}

fn pair_index(a: u8, b: u8) -> usize {
    usize::from(a.to_ascii_lowercase()) << 8 | usize::from(b.to_ascii_lowercase())
}

/// Which two-byte starts some entry of [`DENIED_FUNCTIONS`] has (a bit per
/// pair, 8 KiB).
static STARTS: std::sync::LazyLock<Box<[u64; 1024]>> = std::sync::LazyLock::new(|| {
    let mut starts = Box::new([0u64; 1024]);
    for entry in DENIED_FUNCTIONS {
        let e = entry.as_bytes();
        let i = pair_index(e[0], e[1]);
        starts[i / 64] |= 1 << (i % 64);
    }
    starts
});

/// A short description of why an entry is denied, for refusal reasons.
pub(crate) fn why(entry: &str) -> &'static str {
    DENIED
        .iter()
        .find(|(name, _)| *name == entry)
        .map_or(STATE, |(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix_entries() {
        assert_eq!(denied("pg_read_file"), Some("pg_read_file"));
        assert_eq!(denied("PG_READ_FILE"), Some("pg_read_file"));
        assert_eq!(denied("pg_ls_waldir"), Some("pg_ls_*"));
        assert_eq!(denied("dblink_exec"), Some("dblink_exec"));
        assert_eq!(denied("dblink"), Some("dblink"));
        assert_eq!(denied("dblink_id"), None);
        assert_eq!(denied("pg_file_settings"), Some("pg_file_*"));
        assert_eq!(denied("pg_stat_reset_shared"), Some("pg_stat_reset*"));
        assert_eq!(denied("pg_read_file_x"), None);
        assert_eq!(denied("pg_advisory_lock"), None);
        assert_eq!(denied("lo_create"), None);
        assert_eq!(denied("now"), None);
        assert_eq!(denied("pg_replication_slots"), None);
        assert_eq!(denied("current_setting"), None);
    }

    #[test]
    fn entries_are_well_formed() {
        for e in DENIED_FUNCTIONS {
            assert!(e.len() >= 5, "{e}");
            assert!(e.is_ascii() && *e == e.to_ascii_lowercase(), "{e}");
            assert!(!e[..e.len() - 1].contains('*'), "{e}");
            assert!(!why(e).is_empty());
            // Every entry is reachable through its bucket, in any case.
            let name = e.replace('*', "_x").to_ascii_uppercase();
            assert!(denied(&name).is_some(), "{e}");
        }
    }
}
