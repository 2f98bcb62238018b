//! The documented deny-list of dangerous functions and its matcher.
//!
//! A runtime session may call any function except these. Each entry is a
//! function name in lower case; an entry ending in `*` is a prefix.
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

/// Functions a runtime session may not call. `*` at the end marks a prefix.
pub const DENIED_FUNCTIONS: &[&str] = &[
    // Server files: read, list or stat files on the database server.
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_*", // pg_ls_dir, pg_ls_logdir, pg_ls_waldir, pg_ls_tmpdir, …
    "pg_current_logfile",
    "pg_show_all_file_settings", // behind the pg_file_settings view
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "lo_import", // server-side: reads a server file into a large object
    "lo_export", // server-side: writes a large object to a server file
    // adminpack (before PostgreSQL 17): write, rename, remove server files.
    "pg_file_*",
    "pg_logdir_ls",
    // Raw storage and WAL readers (pageinspect, pg_walinspect): they read
    // pages and WAL records directly, around row-level security.
    "get_raw_page",
    "bt_page_items",
    "bt_multi_page_stats",
    "pg_get_wal_*",
    // Other sessions: signal, cancel, terminate or inspect other backends.
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_signal_backend",
    "pg_log_backend_memory_contexts",
    // Server configuration and server state.
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_rotate_logfile_old",
    "pg_promote",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_xlog_replay_pause",
    "pg_xlog_replay_resume",
    "pg_log_standby_snapshot",
    "pg_import_system_collations",
    "pg_nextoid",
    "pg_stat_reset*", // pg_stat_reset, _shared, _single_table_counters, …
    "pg_stat_statements_reset",
    "pg_truncate_visibility_map",
    // Planner statistics writers (PostgreSQL 18): catalog changes like DDL.
    "pg_restore_relation_stats",
    "pg_restore_attribute_stats",
    "pg_clear_relation_stats",
    "pg_clear_attribute_stats",
    // Replication slots, replication origins, logical decoding.
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_sync_replication_slots",
    "pg_replication_origin_*",
    "pg_logical_*", // pg_logical_slot_get_changes, pg_logical_emit_message, …
    // Functions that execute a SQL string passed as an argument: the string
    // is a statement this classifier never sees.
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "table_to_xmlschema",
    "schema_to_xml*",
    "database_to_xml*",
    "ts_stat",         // ts_stat(sqlquery text, …)
    "ts_rewrite",      // ts_rewrite(query, select text) runs the select
    "crosstab*",       // tablefunc: crosstab(source_sql text, …)
    "connectby",       // tablefunc: builds and runs SQL from its arguments
    "xpath_table",     // xml2: builds and runs SQL from its arguments
    "xslt_process",    // xml2: fetches stylesheets and documents by URL or file
    "pg_background_*", // pg_background: runs SQL text in a background worker
    // Connections to other servers (dblink runs arbitrary SQL elsewhere,
    // possibly as another role, and can loop back to this server).
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_disconnect",
    "dblink_open",
    "dblink_fetch",
    "dblink_close",
    "dblink_get_connections",
    "dblink_send_query",
    "dblink_is_busy",
    "dblink_get_result",
    "dblink_cancel_query",
    "dblink_error_message",
    "dblink_get_notify",
    "dblink_get_pkey",
    "dblink_build_sql_insert",
    "dblink_build_sql_delete",
    "dblink_build_sql_update",
    "dblink_current_query",
    // Views that wrap denied functions (selecting from them calls the
    // function): refused like the function.
    // (pg_file_settings is covered by pg_file_*.)
    "pg_config",
    // Binary-upgrade support (catalog surgery).
    "binary_upgrade_*",
];

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
    let groups: &[(&[&str], &str)] = &[
        (
            &[
                "pg_read_file",
                "pg_read_binary_file",
                "pg_stat_file",
                "pg_ls_*",
                "pg_current_logfile",
                "pg_show_all_file_settings",
                "pg_hba_file_rules",
                "pg_ident_file_mappings",
                "lo_import",
                "lo_export",
                "pg_file_*",
                "pg_logdir_ls",
            ],
            "it reaches the server's files",
        ),
        (
            &[
                "get_raw_page",
                "bt_page_items",
                "bt_multi_page_stats",
                "pg_get_wal_*",
            ],
            "it reads raw pages or WAL around row-level security",
        ),
        (
            &[
                "pg_cancel_backend",
                "pg_terminate_backend",
                "pg_signal_backend",
                "pg_log_backend_memory_contexts",
            ],
            "it reaches other sessions",
        ),
        (
            &[
                "query_to_xml",
                "query_to_xml_and_xmlschema",
                "query_to_xmlschema",
                "cursor_to_xml",
                "cursor_to_xmlschema",
                "table_to_xml",
                "table_to_xml_and_xmlschema",
                "table_to_xmlschema",
                "schema_to_xml*",
                "database_to_xml*",
                "ts_stat",
                "ts_rewrite",
                "crosstab*",
                "connectby",
                "xpath_table",
                "pg_background_*",
            ],
            "it executes SQL text the proxy cannot check",
        ),
        (&["xslt_process"], "it reads documents from files or URLs"),
        (
            &[
                "dblink",
                "dblink_exec",
                "dblink_connect",
                "dblink_connect_u",
                "dblink_open",
                "dblink_send_query",
            ],
            "it connects to another server",
        ),
        (&["pg_config"], "it reads the server's configuration"),
    ];
    groups
        .iter()
        .find(|(names, _)| names.contains(&entry))
        .map(|(_, why)| *why)
        .unwrap_or("it changes the server's configuration or state")
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
