//! How every built-in PostgreSQL function is classified for the SQL
//! policy's allow-list (plugins/postgresql/data/functions.tsv).
//!
//! The table is derived, not written by hand: `mcp-delegate-function-table`
//! reads `pg_proc` from a PostgreSQL 15 and a PostgreSQL 18 cluster
//! ([`crate::function_table`]) and applies [`classify`] to every function;
//! `tests/function_table.rs` reads `pg_proc` again and fails when a
//! function is missing from the table or the table disagrees with these
//! rules.
//!
//! The rules, first match wins:
//! 1. named denials: what executes text as SQL, changes settings or roles,
//!    signals backends, touches files, large objects, replication or WAL,
//!    resets statistics, takes session-level advisory locks, notifies, or
//!    loads code: refused whatever the operator configures;
//! 2. functions no SQL caller needs: `internal`-typed support functions,
//!    handlers, triggers, type input/output functions;
//! 3. volatile functions (the ones allowed side effects) are refused unless
//!    reviewed and listed in [`VOLATILE_REVIEWED`];
//! 4. every other (stable or immutable, so side-effect-free) function is
//!    allowed, with a category from its name and types.

/// One function as `pg_proc` describes it.
#[derive(Debug, Clone)]
pub struct ProcRow {
    pub schema: String,
    pub name: String,
    /// `pg_get_function_identity_arguments`.
    pub identity_args: String,
    /// `f` function, `a` aggregate, `w` window, `p` procedure.
    pub kind: char,
    /// `i` immutable, `s` stable, `v` volatile.
    pub volatility: char,
    pub nargs: i32,
    pub ndefaults: i32,
    pub variadic: bool,
    /// Type names (`pg_type.typname`) of the input arguments and the result.
    pub arg_types: Vec<String>,
    pub ret_type: String,
    /// Referenced as a type's input/output/receive/send/typmod/analyze/subscript function.
    pub type_io: bool,
}

/// The policy's decision for a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Allowed in every statement class.
    Allow,
    /// Allowed, and makes the statement a write (`nextval`, `setval`).
    Write,
    /// Refused for every role.
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Write => "write",
            Verdict::Deny => "deny",
        }
    }
}

/// Denied whatever the config says, by name, with the reason category.
/// (`ts_rewrite` is listed separately: only its query-text form is denied.)
pub const NAMED_DENIALS: &[(&str, &[&str])] = &[
    (
        "query-text",
        &[
            "ts_stat",
            "query_to_xml",
            "query_to_xml_and_xmlschema",
            "query_to_xmlschema",
            "cursor_to_xml",
            "cursor_to_xmlschema",
            "table_to_xml",
            "table_to_xml_and_xmlschema",
            "table_to_xmlschema",
            "schema_to_xml",
            "schema_to_xml_and_xmlschema",
            "schema_to_xmlschema",
            "database_to_xml",
            "database_to_xml_and_xmlschema",
            "database_to_xmlschema",
        ],
    ),
    ("settings", &["set_config"]),
    (
        "session-state",
        &[
            "setseed",
            "pg_export_snapshot",
            "pg_isolation_test_session_is_blocked",
            // The pooled session's prepared statements are other callers'
            // SQL text.
            "pg_prepared_statement",
        ],
    ),
    (
        "signal",
        &[
            "pg_cancel_backend",
            "pg_terminate_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_rotate_logfile_old",
            "pg_promote",
            "pg_log_backend_memory_contexts",
        ],
    ),
    (
        "file",
        &[
            "pg_read_file",
            "pg_read_file_old",
            "pg_read_binary_file",
            "pg_stat_file",
            "pg_current_logfile",
            "pg_hba_file_rules",
            "pg_ident_file_mappings",
            "pg_show_all_file_settings",
            "pg_control_checkpoint",
            "pg_control_system",
            "pg_control_init",
            "pg_control_recovery",
            "pg_tablespace_databases",
        ],
    ),
    (
        "advisory-lock-session",
        &[
            "pg_advisory_lock",
            "pg_advisory_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared",
            "pg_advisory_unlock",
            "pg_advisory_unlock_shared",
            "pg_advisory_unlock_all",
        ],
    ),
    ("notify", &["pg_notify"]),
    ("large-object", &["loread", "lowrite"]),
    (
        "wal",
        &["pg_last_xact_replay_timestamp", "pg_log_standby_snapshot"],
    ),
    (
        "stats-reset",
        &[
            "pg_clear_relation_stats",
            "pg_clear_attribute_stats",
            "pg_restore_relation_stats",
            "pg_restore_attribute_stats",
        ],
    ),
    (
        "backup",
        &[
            "pg_backup_start",
            "pg_backup_stop",
            "pg_start_backup",
            "pg_stop_backup",
            "pg_create_restore_point",
        ],
    ),
    (
        "load-code",
        &[
            "pg_import_system_collations",
            "pg_extension_config_dump",
            "pg_nextoid",
            "pg_stop_making_pinned_objects",
            "amvalidate",
            "postgresql_fdw_validator",
        ],
    ),
    (
        "maintenance",
        &[
            "brin_summarize_new_values",
            "brin_summarize_range",
            "brin_desummarize_range",
            "gin_clean_pending_list",
            "currtid2",
            "pg_get_sequence_data",
        ],
    ),
];

/// Denied by name prefix (every current and future function so named).
pub const PREFIX_DENIALS: &[(&str, &str)] = &[
    ("lo_", "large-object"),
    ("pg_ls_", "file"),
    ("pg_stat_reset", "stats-reset"),
    ("pg_replication_", "replication"),
    ("pg_logical_", "replication"),
    ("pg_create_", "replication"),
    ("pg_copy_", "replication"),
    ("pg_drop_replication", "replication"),
    ("pg_sync_replication", "replication"),
    ("pg_show_replication", "replication"),
    ("binary_upgrade_", "load-code"),
    ("fmgr_", "load-code"),
    ("pg_event_trigger_", "trigger"),
];

/// Volatile functions reviewed and found safe for any caller: their side
/// effects stay inside the caller's transaction or are none at all.
pub const VOLATILE_REVIEWED: &[(&str, &str)] = &[
    ("random", "random"),
    ("random_normal", "random"),
    ("gen_random_uuid", "random"),
    ("uuidv4", "random"),
    ("uuidv7", "random"),
    ("array_sample", "random"),
    ("array_shuffle", "random"),
    ("clock_timestamp", "datetime"),
    ("timeofday", "datetime"),
    ("pg_sleep", "sleep"),
    ("pg_sleep_for", "sleep"),
    ("pg_sleep_until", "sleep"),
    ("currval", "sequence"),
    ("lastval", "sequence"),
    ("pg_sequence_last_value", "sequence"),
    // Transaction-level advisory locks end with the transaction, which
    // always ends within the call.
    ("pg_advisory_xact_lock", "advisory-lock-xact"),
    ("pg_advisory_xact_lock_shared", "advisory-lock-xact"),
    ("pg_try_advisory_xact_lock", "advisory-lock-xact"),
    ("pg_try_advisory_xact_lock_shared", "advisory-lock-xact"),
    ("current_query", "system-info"),
    ("pg_is_in_recovery", "system-info"),
    ("pg_jit_available", "system-info"),
    ("pg_get_loaded_modules", "system-info"),
    ("pg_get_wait_events", "system-info"),
    ("pg_collation_actual_version", "catalog-info"),
    ("pg_database_collation_actual_version", "catalog-info"),
    ("pg_partition_ancestors", "catalog-info"),
    ("pg_partition_tree", "catalog-info"),
    ("pg_database_size", "statistics"),
    ("pg_indexes_size", "statistics"),
    ("pg_relation_size", "statistics"),
    ("pg_table_size", "statistics"),
    ("pg_tablespace_size", "statistics"),
    ("pg_total_relation_size", "statistics"),
    ("pg_blocking_pids", "statistics"),
    ("pg_safe_snapshot_blocking_pids", "statistics"),
    ("pg_lock_status", "statistics"),
    ("pg_prepared_xact", "statistics"),
    ("pg_notification_queue_usage", "statistics"),
    ("pg_get_backend_memory_contexts", "statistics"),
    ("pg_get_shmem_allocations", "statistics"),
    ("pg_get_shmem_allocations_numa", "statistics"),
    ("pg_get_multixact_members", "statistics"),
    ("pg_get_aios", "statistics"),
    ("pg_last_committed_xact", "statistics"),
    ("pg_xact_commit_timestamp", "statistics"),
    ("pg_xact_commit_timestamp_origin", "statistics"),
    ("pg_xact_status", "statistics"),
    ("txid_status", "statistics"),
    ("pg_stat_clear_snapshot", "statistics"),
    ("pg_stat_force_next_flush", "statistics"),
    ("pg_stat_have_stats", "statistics"),
];

/// Return types of functions that only the server calls.
const HANDLER_TYPES: &[&str] = &[
    "internal",
    "language_handler",
    "fdw_handler",
    "index_am_handler",
    "table_am_handler",
    "tsm_handler",
];

/// The category and verdict of one function.
pub fn classify(row: &ProcRow) -> (&'static str, Verdict) {
    let name = row.name.as_str();
    if row.schema == "information_schema" {
        // Helpers of the information_schema views; callers query the views.
        return ("internal", Verdict::Deny);
    }
    if name == "ts_rewrite" && row.arg_types.iter().any(|t| t == "text") {
        return ("query-text", Verdict::Deny);
    }
    for (category, names) in NAMED_DENIALS {
        if names.contains(&name) {
            return (category, Verdict::Deny);
        }
    }
    for (prefix, category) in PREFIX_DENIALS {
        if name.starts_with(prefix) {
            return (category, Verdict::Deny);
        }
    }
    if name.contains("wal") && name.starts_with("pg_") && name != "pg_wal_lsn_diff" {
        return ("wal", Verdict::Deny);
    }
    if name.ends_with("_handler") || name.ends_with("_validator") {
        return ("load-code", Verdict::Deny);
    }
    if row.ret_type == "trigger" || row.ret_type == "event_trigger" {
        return ("trigger", Verdict::Deny);
    }
    if HANDLER_TYPES.contains(&row.ret_type.as_str())
        || row.arg_types.iter().any(|t| t == "internal")
    {
        return ("internal", Verdict::Deny);
    }
    if row.type_io || row.arg_types.iter().any(|t| t == "cstring") || row.ret_type == "cstring" {
        return ("type-io", Verdict::Deny);
    }
    if name == "nextval" || name == "setval" {
        return ("sequence", Verdict::Write);
    }
    if row.volatility == 'v' {
        // Counters of the caller's own transaction so far.
        if name.starts_with("pg_stat_get_") {
            return ("statistics", Verdict::Allow);
        }
        return match VOLATILE_REVIEWED.iter().find(|(n, _)| *n == name) {
            Some((_, category)) => (category, Verdict::Allow),
            None => ("volatile-unreviewed", Verdict::Deny),
        };
    }
    (category_of(row), Verdict::Allow)
}

/// What an allowed (side-effect-free) function is about.
fn category_of(row: &ProcRow) -> &'static str {
    let name = row.name.as_str();
    match row.kind {
        'a' => return "aggregate",
        'w' => return "window",
        _ => {}
    }
    if name.starts_with("pg_stat_") {
        return "statistics";
    }
    let catalog_prefixes = [
        "has_",
        "pg_get_",
        "to_reg",
        "pg_describe_object",
        "pg_identify_object",
        "format_type",
        "obj_description",
        "col_description",
        "shobj_description",
        "pg_has_role",
        "pg_options_to_table",
        "pg_index",
        "pg_column_",
        "pg_relation_",
        "pg_filenode_relation",
        "pg_tablespace_location",
        "pg_partition_root",
        "pg_sequence_parameters",
        "pg_typeof",
        "pg_basetype",
        "aclexplode",
        "acldefault",
        "makeaclitem",
        "row_security_active",
    ];
    if catalog_prefixes.iter().any(|p| name.starts_with(p))
        || (name.starts_with("pg_") && name.ends_with("_is_visible"))
    {
        return "catalog-info";
    }
    let system = [
        "current_",
        "session_user",
        "system_user",
        "version",
        "inet_client_",
        "inet_server_",
        "getpgusername",
        "getdatabaseencoding",
        "pg_backend_pid",
        "pg_postmaster_start_time",
        "pg_conf_load_time",
        "pg_trigger_depth",
        "pg_my_temp_schema",
        "pg_is_other_temp_schema",
        "pg_listening_channels",
        "pg_prepared_statement",
        "pg_cursor",
        "pg_show_all_settings",
        "pg_settings_get_flags",
        "pg_config",
        "pg_available_extension",
        "pg_extension_update_paths",
        "pg_timezone_",
        "pg_get_keywords",
        "pg_numa_available",
        "txid_",
        "pg_current_",
        "pg_snapshot_",
        "pg_visible_in_snapshot",
        "pg_client_encoding",
        "pg_encoding",
        "pg_char_to_encoding",
    ];
    if system.iter().any(|p| name.starts_with(p)) {
        return "system-info";
    }
    let types: Vec<&str> = row
        .arg_types
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(row.ret_type.as_str()))
        .collect();
    let any = |wanted: &[&str]| types.iter().any(|t| wanted.contains(t));
    if any(&["json", "jsonb", "jsonpath", "_json", "_jsonb"]) {
        "json"
    } else if any(&["xml", "_xml"]) {
        "xml"
    } else if any(&[
        "tsvector",
        "tsquery",
        "regconfig",
        "regdictionary",
        "gtsvector",
        "_tsvector",
        "_tsquery",
    ]) || name.starts_with("ts_")
    {
        "text-search"
    } else if any(&["point", "lseg", "line", "box", "path", "polygon", "circle"]) {
        "geometry"
    } else if any(&["inet", "cidr", "macaddr", "macaddr8"]) {
        "network"
    } else if types
        .iter()
        .any(|t| t.contains("range") && !t.starts_with('_'))
    {
        "range"
    } else if any(&[
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "interval",
    ]) {
        "datetime"
    } else if any(&["uuid"]) {
        "uuid"
    } else if any(&["money"]) {
        "money"
    } else if any(&["bit", "varbit"]) {
        "bit-string"
    } else if any(&["bytea"]) {
        "binary"
    } else if any(&["anyenum"]) {
        "enum"
    } else if types
        .iter()
        .any(|t| t.starts_with('_') || t.contains("array"))
        || name.starts_with("array_")
    {
        "array"
    } else if any(&[
        "int2", "int4", "int8", "float4", "float8", "numeric", "oid", "xid", "xid8", "cid", "tid",
        "pg_lsn",
    ]) {
        "math"
    } else if any(&["text", "varchar", "bpchar", "char", "name"]) {
        "string"
    } else if any(&["bool"]) {
        "boolean"
    } else if types.iter().any(|t| t.starts_with("reg")) {
        "catalog-info"
    } else {
        "general"
    }
}
