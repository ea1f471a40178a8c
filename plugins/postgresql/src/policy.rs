//! The SQL policy: what a statement is, by PostgreSQL's own grammar
//! (pg_query), and whether the caller's delegated roles allow it. Decided
//! before any database round trip.
//!
//! Read is an allow-list: a statement kind not classified as read below is
//! never treated as read. The whole tree is walked, so a data-modifying
//! CTE, a locking clause in a subquery, `SELECT … INTO` or a forbidden
//! function in a FROM clause are all seen.

use pg_query::protobuf::node::Node as N;
use pg_query::NodeEnum;
use serde_json::Value;

use mcp_delegate_plugin_api::codes;

/// Statement classes, least to most powerful. `Never` is refused for
/// every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatementClass {
    Read,
    Write,
    Admin,
    Dangerous,
}

impl StatementClass {
    pub fn label(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Admin => "admin",
            StatementClass::Dangerous => "dangerous",
        }
    }

    /// The delegated role that allows this class.
    pub fn required_role(self) -> &'static str {
        match self {
            StatementClass::Read => "sql-read",
            StatementClass::Write => "sql-write",
            StatementClass::Admin => "sql-admin",
            StatementClass::Dangerous => "admin",
        }
    }
}

/// What the policy concluded about an allowed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: StatementClass,
    /// `SELECT`, `INSERT`, … (for messages and the result's `command`).
    pub kind: String,
    /// Highest `$n` used: the number of parameters the statement takes.
    pub parameter_count: usize,
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub statement_kind: Option<String>,
    pub required_role: Option<&'static str>,
    pub function: Option<String>,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            statement_kind: None,
            required_role: None,
            function: None,
        }
    }
}

/// Functions refused anywhere in a statement, for every role: they change
/// identity or settings, run SQL strings, or reach outside the database.
/// An entry ending in `*` is a prefix.
pub const FORBIDDEN_FUNCTIONS: &[&str] = &[
    "set_config",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "dblink*",
    "lo_import",
    "lo_export",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    // NOTIFY is refused as a statement; this is the same by function.
    "pg_notify",
    // Session-level advisory locks would outlive the call on a pooled
    // connection (transaction-level ones are fine).
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

fn forbidden(function: &str) -> bool {
    FORBIDDEN_FUNCTIONS
        .iter()
        .any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => function.starts_with(prefix),
            None => function == *entry,
        })
}

/// Statement kinds refused for every role, by top-level node.
fn never_kind(node: &NodeEnum) -> Option<&'static str> {
    Some(match node {
        N::VariableSetStmt(_) => "SET",
        N::ConstraintsSetStmt(_) => "SET CONSTRAINTS",
        N::AlterSystemStmt(_) => "ALTER SYSTEM",
        N::AlterDatabaseSetStmt(_) => "ALTER DATABASE SET",
        N::AlterRoleSetStmt(_) => "ALTER ROLE SET",
        N::TransactionStmt(_) => "TRANSACTION CONTROL",
        N::DoStmt(_) => "DO",
        N::CopyStmt(_) => "COPY",
        N::ListenStmt(_) => "LISTEN",
        N::NotifyStmt(_) => "NOTIFY",
        N::UnlistenStmt(_) => "UNLISTEN",
        N::DiscardStmt(_) => "DISCARD",
        N::LoadStmt(_) => "LOAD",
        N::CreateRoleStmt(_) => "CREATE ROLE",
        N::AlterRoleStmt(_) => "ALTER ROLE",
        N::DropRoleStmt(_) => "DROP ROLE",
        N::SecLabelStmt(_) => "SECURITY LABEL",
        N::PrepareStmt(_) => "PREPARE",
        N::ExecuteStmt(_) => "EXECUTE",
        N::DeallocateStmt(_) => "DEALLOCATE",
        N::DeclareCursorStmt(_) => "DECLARE",
        N::FetchStmt(_) => "FETCH",
        N::ClosePortalStmt(_) => "CLOSE",
        N::ReassignOwnedStmt(_) => "REASSIGN OWNED",
        N::DropOwnedStmt(_) => "DROP OWNED",
        _ => return None,
    })
}

fn kind_name(node: &NodeEnum) -> String {
    match node {
        N::SelectStmt(_) => "SELECT".into(),
        N::InsertStmt(_) => "INSERT".into(),
        N::UpdateStmt(_) => "UPDATE".into(),
        N::DeleteStmt(_) => "DELETE".into(),
        N::MergeStmt(_) => "MERGE".into(),
        N::VariableShowStmt(_) => "SHOW".into(),
        N::ExplainStmt(_) => "EXPLAIN".into(),
        N::LockStmt(_) => "LOCK".into(),
        N::DropStmt(_) => "DROP".into(),
        N::TruncateStmt(_) => "TRUNCATE".into(),
        N::CallStmt(_) => "CALL".into(),
        N::GrantStmt(_) | N::GrantRoleStmt(_) => "GRANT".into(),
        N::CommentStmt(_) => "COMMENT".into(),
        N::VacuumStmt(_) => "VACUUM".into(),
        other => {
            // `CreateStmt` → `CREATE`, `AlterTableStmt` → `ALTER TABLE`…
            let debug = format!("{other:?}");
            let name = debug.split('(').next().unwrap_or("STATEMENT");
            let name = name.strip_suffix("Stmt").unwrap_or(name);
            let mut words = String::new();
            for (index, c) in name.chars().enumerate() {
                if c.is_uppercase() && index > 0 {
                    words.push(' ');
                }
                words.push(c.to_ascii_uppercase());
            }
            words
        }
    }
}

/// The class of one statement node (top level or an EXPLAIN target).
fn classify(node: &NodeEnum) -> Result<StatementClass, Refusal> {
    if let Some(kind) = never_kind(node) {
        return Err(Refusal {
            statement_kind: Some(kind.to_owned()),
            ..Refusal::new(
                codes::SQL_NOT_PERMITTED,
                format!("{kind} statements are not permitted through this tool, for any role"),
            )
        });
    }
    Ok(match node {
        N::SelectStmt(_) | N::VariableShowStmt(_) => StatementClass::Read,
        // EXPLAIN takes its target's class, with or without ANALYZE.
        N::ExplainStmt(explain) => {
            let target = explain
                .query
                .as_ref()
                .and_then(|query| query.node.as_ref())
                .ok_or_else(|| {
                    Refusal::new(codes::SQL_PARSE_ERROR, "EXPLAIN without a statement")
                })?;
            classify(target)?
        }
        N::InsertStmt(_)
        | N::UpdateStmt(_)
        | N::DeleteStmt(_)
        | N::MergeStmt(_)
        | N::LockStmt(_) => StatementClass::Write,
        N::DropStmt(_) | N::TruncateStmt(_) => StatementClass::Dangerous,
        _ => StatementClass::Admin,
    })
}

/// What the walk over the whole tree found.
#[derive(Default)]
struct TreeFindings {
    forbidden_function: Option<String>,
    modifies_data: bool,
    locks_rows: bool,
    creates_table: bool,
    parameter_count: usize,
}

/// The last part of a `funcname` list (`pg_catalog.set_config` → `set_config`).
fn function_name(call: &Value) -> Option<String> {
    call.get("funcname")?
        .as_array()?
        .last()?
        .pointer("/node/String/sval")?
        .as_str()
        .map(str::to_lowercase)
}

fn walk(value: &Value, findings: &mut TreeFindings) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match key.as_str() {
                    // A function call node, or CALL's `funccall` field.
                    "FuncCall" | "funccall" => {
                        if let Some(name) = function_name(child).filter(|name| forbidden(name)) {
                            findings.forbidden_function.get_or_insert(name);
                        }
                    }
                    "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                        findings.modifies_data = true
                    }
                    "LockingClause" => findings.locks_rows = true,
                    "locking_clause" if child.as_array().is_some_and(|items| !items.is_empty()) => {
                        findings.locks_rows = true
                    }
                    // SELECT … INTO creates a table.
                    "IntoClause" => findings.creates_table = true,
                    "into_clause" if !child.is_null() => findings.creates_table = true,
                    "ParamRef" => {
                        let number = child.get("number").and_then(Value::as_u64).unwrap_or(0);
                        findings.parameter_count = findings
                            .parameter_count
                            .max(usize::try_from(number).unwrap_or(0));
                    }
                    _ => {}
                }
                walk(child, findings);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| walk(item, findings)),
        _ => {}
    }
}

/// Classifies `sql` and checks it against the caller's delegated roles.
#[cfg(test)]
pub fn check(sql: &str, delegated_roles: &[String]) -> Result<Verdict, Refusal> {
    let verdict = analyze(sql)?;
    authorize(&verdict, delegated_roles)?;
    Ok(verdict)
}

/// What a statement is, whoever runs it (cacheable by SQL text).
pub fn analyze(sql: &str) -> Result<Verdict, Refusal> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).map_err(|err| {
        Refusal::new(
            codes::SQL_PARSE_ERROR,
            format!("the SQL could not be parsed: {err}"),
        )
    })?;
    let statements = &parsed.protobuf.stmts;
    let statement = match statements.as_slice() {
        [] => {
            return Err(Refusal::new(
                codes::SQL_PARSE_ERROR,
                "the SQL contains no statement",
            ))
        }
        [one] => one,
        _ => {
            return Err(Refusal::new(
                codes::SQL_MULTIPLE_STATEMENTS,
                format!(
                    "exactly one statement is allowed per call; found {}",
                    statements.len()
                ),
            ))
        }
    };
    let top = statement
        .stmt
        .as_ref()
        .and_then(|node| node.node.as_ref())
        .ok_or_else(|| Refusal::new(codes::SQL_PARSE_ERROR, "the SQL contains no statement"))?;
    let kind = kind_name(top);
    let mut class = classify(top)?;
    // pg_query's own node iterator skips some node types, so the policy
    // walks the complete tree in its serde form instead: every field of
    // every node, by construction.
    let tree = serde_json::to_value(&parsed.protobuf.stmts).map_err(|err| {
        Refusal::new(
            codes::SQL_PARSE_ERROR,
            format!("the parse tree could not be read: {err}"),
        )
    })?;
    let mut findings = TreeFindings::default();
    walk(&tree, &mut findings);
    if let Some(name) = findings.forbidden_function {
        return Err(Refusal {
            function: Some(name.clone()),
            ..Refusal::new(
                codes::SQL_FORBIDDEN_FUNCTION,
                format!("the function {name}() is not permitted through this tool, for any role"),
            )
        });
    }
    if findings.modifies_data || findings.locks_rows {
        class = class.max(StatementClass::Write);
    }
    if findings.creates_table {
        class = class.max(StatementClass::Admin);
    }
    Ok(Verdict {
        class,
        kind,
        parameter_count: findings.parameter_count,
    })
}

/// Most distinct statements whose analysis is remembered; the cache starts
/// over when full (agents repeat a small set of statements).
const VERDICT_CACHE_ENTRIES: usize = 4096;

/// [`analyze`] results by SQL text: parsing and walking the tree is the
/// policy's cost, and the answer depends on the text alone.
#[derive(Default)]
pub struct VerdictCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, Result<Verdict, Refusal>>>,
}

impl VerdictCache {
    pub fn analyze(&self, sql: &str) -> Result<Verdict, Refusal> {
        if let Ok(entries) = self.entries.lock() {
            if let Some(known) = entries.get(sql) {
                return known.clone();
            }
        }
        let verdict = analyze(sql);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= VERDICT_CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(sql.to_owned(), verdict.clone());
        }
        verdict
    }
}

/// Whether the delegated roles allow a statement of this class.
pub fn authorize(verdict: &Verdict, delegated_roles: &[String]) -> Result<(), Refusal> {
    let (class, kind) = (verdict.class, &verdict.kind);
    let allowed = match class {
        StatementClass::Read => true,
        StatementClass::Write => has_any(delegated_roles, &["sql-write", "sql-admin", "admin"]),
        StatementClass::Admin => has_any(delegated_roles, &["sql-admin", "admin"]),
        StatementClass::Dangerous => has_any(delegated_roles, &["admin"]),
    };
    if !allowed {
        let role = class.required_role();
        return Err(Refusal {
            statement_kind: Some(kind.clone()),
            required_role: Some(role),
            ..Refusal::new(
                codes::SQL_NOT_PERMITTED,
                format!(
                    "{kind} (a {} statement) needs the delegated role '{role}'",
                    class.label()
                ),
            )
        });
    }
    Ok(())
}

fn has_any(roles: &[String], wanted: &[&str]) -> bool {
    roles.iter().any(|role| wanted.contains(&role.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(sql: &str) -> Result<StatementClass, &'static str> {
        check(sql, &["admin".to_owned()])
            .map(|v| v.class)
            .map_err(|r| r.code)
    }

    #[test]
    fn every_forbidden_function_is_refused_even_for_admin() {
        for entry in FORBIDDEN_FUNCTIONS {
            let name = entry.trim_end_matches('*');
            let name = if entry.ends_with('*') {
                format!("{name}_exec")
            } else {
                name.to_owned()
            };
            for sql in [
                format!("SELECT {name}('a', 'b', false)"),
                format!("SELECT * FROM pg_catalog.{name}('a')"),
                format!(
                    "SELECT 1 WHERE EXISTS (SELECT {} ('x'))",
                    name.to_uppercase()
                ),
            ] {
                let refusal = check(&sql, &["admin".to_owned()]).unwrap_err();
                assert_eq!(refusal.code, codes::SQL_FORBIDDEN_FUNCTION, "{sql}");
                assert_eq!(refusal.function.as_deref(), Some(name.as_str()), "{sql}");
            }
        }
    }

    #[test]
    fn classes() {
        assert_eq!(class_of("SELECT 1"), Ok(StatementClass::Read));
        assert_eq!(class_of("SHOW search_path"), Ok(StatementClass::Read));
        assert_eq!(class_of("EXPLAIN SELECT 1"), Ok(StatementClass::Read));
        assert_eq!(
            class_of("EXPLAIN ANALYZE DELETE FROM t"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("EXPLAIN INSERT INTO t VALUES (1)"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("SELECT * FROM t FOR UPDATE"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("SELECT * INTO t2 FROM t"),
            Ok(StatementClass::Admin)
        );
        assert_eq!(class_of("LOCK TABLE t"), Ok(StatementClass::Write));
        assert_eq!(class_of("VACUUM t"), Ok(StatementClass::Admin));
        assert_eq!(class_of("DROP TABLE t"), Ok(StatementClass::Dangerous));
        assert_eq!(class_of("TRUNCATE t"), Ok(StatementClass::Dangerous));
        assert_eq!(class_of("SET ROLE x"), Err(codes::SQL_NOT_PERMITTED));
        assert_eq!(
            class_of("SELECT 1; RESET ROLE"),
            Err(codes::SQL_MULTIPLE_STATEMENTS)
        );
        assert_eq!(class_of("-- nothing"), Err(codes::SQL_PARSE_ERROR));
        assert_eq!(class_of("EXPLAIN EXECUTE p"), Err(codes::SQL_NOT_PERMITTED));
    }

    #[test]
    fn statement_classes_the_issue_list_left_open() {
        for never in [
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE p",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 1 FROM c",
            "MOVE 1 IN c",
            "CLOSE c",
        ] {
            assert_eq!(class_of(never), Err(codes::SQL_NOT_PERMITTED), "{never}");
        }
        for admin in [
            "VACUUM t",
            "ANALYZE t",
            "CLUSTER t USING i",
            "REINDEX TABLE t",
            "REFRESH MATERIALIZED VIEW m",
            "CHECKPOINT",
            "CREATE INDEX ON t (a)",
            "COMMENT ON TABLE t IS 'x'",
            "CALL p()",
        ] {
            assert_eq!(class_of(admin), Ok(StatementClass::Admin), "{admin}");
        }
        assert_eq!(
            class_of("LOCK TABLE t IN SHARE MODE"),
            Ok(StatementClass::Write)
        );
        assert_eq!(
            class_of("EXPLAIN UPDATE t SET a = 1"),
            Ok(StatementClass::Write)
        );
        assert_eq!(class_of("   "), Err(codes::SQL_PARSE_ERROR));
    }

    #[test]
    fn roles_and_parameters() {
        let read_only: Vec<String> = vec![];
        let refusal = check("INSERT INTO t VALUES ($1)", &read_only).unwrap_err();
        assert_eq!(refusal.code, codes::SQL_NOT_PERMITTED);
        assert_eq!(refusal.required_role, Some("sql-write"));
        assert_eq!(refusal.statement_kind.as_deref(), Some("INSERT"));
        let writer = vec!["sql-write".to_owned()];
        let verdict = check("UPDATE t SET a = $2 WHERE id = $1", &writer).unwrap();
        assert_eq!(verdict.parameter_count, 2);
        assert_eq!(
            check("CREATE TABLE x (a int)", &writer)
                .unwrap_err()
                .required_role,
            Some("sql-admin")
        );
        assert_eq!(
            check("SELECT created_at FROM t", &read_only).unwrap().class,
            StatementClass::Read
        );
    }
}
