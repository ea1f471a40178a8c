//! Statement kinds: their names, the class each needs, and the kinds no
//! role may run through this tool.

use pg_query::protobuf::node::Node as N;
use pg_query::NodeEnum;

use super::{Refusal, StatementClass};
use mcp_delegate_plugin_api::codes;

/// Statement kinds refused for every role, wherever they stand (at the
/// top, under EXPLAIN, as the query of CREATE TABLE AS, among the elements
/// of CREATE SCHEMA): (parse node, kind, reason category). Session and
/// transaction control (the delegated transaction is ours), roles and
/// settings, and everything that defines code the server would run later
/// or reaches outside the database (functions, triggers, rules,
/// operators, casts, languages, extensions, foreign data, replication,
/// tablespaces, databases). Such objects are for migrations, not agents.
pub(super) const NEVER_NODES: &[(&str, &str, &str)] = &[
    ("VariableSetStmt", "SET", "session-control"),
    ("ConstraintsSetStmt", "SET CONSTRAINTS", "session-control"),
    ("TransactionStmt", "TRANSACTION CONTROL", "session-control"),
    ("DiscardStmt", "DISCARD", "session-control"),
    ("PrepareStmt", "PREPARE", "session-control"),
    ("ExecuteStmt", "EXECUTE", "session-control"),
    ("DeallocateStmt", "DEALLOCATE", "session-control"),
    ("DeclareCursorStmt", "DECLARE", "session-control"),
    ("FetchStmt", "FETCH", "session-control"),
    ("ClosePortalStmt", "CLOSE", "session-control"),
    ("ListenStmt", "LISTEN", "notify"),
    ("NotifyStmt", "NOTIFY", "notify"),
    ("UnlistenStmt", "UNLISTEN", "notify"),
    ("AlterSystemStmt", "ALTER SYSTEM", "settings"),
    ("AlterDatabaseSetStmt", "ALTER DATABASE SET", "settings"),
    ("AlterRoleSetStmt", "ALTER ROLE SET", "settings"),
    ("CreateRoleStmt", "CREATE ROLE", "roles"),
    ("AlterRoleStmt", "ALTER ROLE", "roles"),
    ("DropRoleStmt", "DROP ROLE", "roles"),
    ("GrantRoleStmt", "GRANT ROLE", "roles"),
    ("ReassignOwnedStmt", "REASSIGN OWNED", "roles"),
    ("DropOwnedStmt", "DROP OWNED", "roles"),
    ("SecLabelStmt", "SECURITY LABEL", "roles"),
    ("DoStmt", "DO", "code"),
    ("LoadStmt", "LOAD", "code"),
    ("CreateFunctionStmt", "CREATE FUNCTION", "code"),
    ("AlterFunctionStmt", "ALTER FUNCTION", "code"),
    ("CreateTrigStmt", "CREATE TRIGGER", "code"),
    ("CreateEventTrigStmt", "CREATE EVENT TRIGGER", "code"),
    ("AlterEventTrigStmt", "ALTER EVENT TRIGGER", "code"),
    ("RuleStmt", "CREATE RULE", "code"),
    ("CreatePlangStmt", "CREATE LANGUAGE", "code"),
    ("CreateExtensionStmt", "CREATE EXTENSION", "code"),
    ("AlterExtensionStmt", "ALTER EXTENSION", "code"),
    ("AlterExtensionContentsStmt", "ALTER EXTENSION", "code"),
    ("CreateCastStmt", "CREATE CAST", "code"),
    ("CreateTransformStmt", "CREATE TRANSFORM", "code"),
    ("DefineStmt", "CREATE AGGREGATE, OPERATOR OR TYPE", "code"),
    ("CreateRangeStmt", "CREATE TYPE AS RANGE", "code"),
    ("CreateOpClassStmt", "CREATE OPERATOR CLASS", "code"),
    ("CreateOpFamilyStmt", "CREATE OPERATOR FAMILY", "code"),
    ("AlterOpFamilyStmt", "ALTER OPERATOR FAMILY", "code"),
    ("CreateConversionStmt", "CREATE CONVERSION", "code"),
    ("CreateAmStmt", "CREATE ACCESS METHOD", "code"),
    ("CopyStmt", "COPY", "files-or-network"),
    (
        "CreateFdwStmt",
        "CREATE FOREIGN DATA WRAPPER",
        "files-or-network",
    ),
    (
        "AlterFdwStmt",
        "ALTER FOREIGN DATA WRAPPER",
        "files-or-network",
    ),
    (
        "CreateForeignServerStmt",
        "CREATE SERVER",
        "files-or-network",
    ),
    ("AlterForeignServerStmt", "ALTER SERVER", "files-or-network"),
    (
        "CreateForeignTableStmt",
        "CREATE FOREIGN TABLE",
        "files-or-network",
    ),
    (
        "ImportForeignSchemaStmt",
        "IMPORT FOREIGN SCHEMA",
        "files-or-network",
    ),
    (
        "CreateUserMappingStmt",
        "CREATE USER MAPPING",
        "files-or-network",
    ),
    (
        "AlterUserMappingStmt",
        "ALTER USER MAPPING",
        "files-or-network",
    ),
    (
        "DropUserMappingStmt",
        "DROP USER MAPPING",
        "files-or-network",
    ),
    ("CreatePublicationStmt", "CREATE PUBLICATION", "replication"),
    ("AlterPublicationStmt", "ALTER PUBLICATION", "replication"),
    (
        "CreateSubscriptionStmt",
        "CREATE SUBSCRIPTION",
        "replication",
    ),
    ("AlterSubscriptionStmt", "ALTER SUBSCRIPTION", "replication"),
    ("DropSubscriptionStmt", "DROP SUBSCRIPTION", "replication"),
    (
        "CreateTableSpaceStmt",
        "CREATE TABLESPACE",
        "files-or-network",
    ),
    ("DropTableSpaceStmt", "DROP TABLESPACE", "files-or-network"),
    (
        "AlterTableSpaceOptionsStmt",
        "ALTER TABLESPACE",
        "files-or-network",
    ),
    (
        "AlterTableMoveAllStmt",
        "ALTER TABLE ALL IN TABLESPACE",
        "files-or-network",
    ),
    ("CreatedbStmt", "CREATE DATABASE", "databases"),
    ("DropdbStmt", "DROP DATABASE", "databases"),
    ("AlterDatabaseStmt", "ALTER DATABASE", "databases"),
    (
        "AlterDatabaseRefreshCollStmt",
        "ALTER DATABASE",
        "databases",
    ),
];

/// The never-permitted kind a parse node (its serde name) is, if it is one.
pub(super) fn never_node(node: &str) -> Option<(&'static str, &'static str)> {
    if !node.ends_with("Stmt") {
        return None;
    }
    NEVER_NODES
        .iter()
        .find(|(name, _, _)| *name == node)
        .map(|&(_, kind, reason)| (kind, reason))
}

/// The refusal of a never-permitted statement kind.
pub(super) fn never_refusal(kind: &str, reason: &'static str) -> Refusal {
    Refusal {
        statement_kind: Some(kind.into()),
        ..Refusal::new(
            codes::SQL_NOT_PERMITTED,
            reason,
            format!("{kind} statements are not permitted through this tool, for any role"),
        )
    }
}

pub(super) fn kind_name(node: &NodeEnum) -> String {
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
        N::GrantStmt(_) => "GRANT".into(),
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

/// The class of one statement node (top level or an EXPLAIN target). The
/// never-permitted kinds were refused before, by the walk.
pub(super) fn classify(node: &NodeEnum) -> Result<StatementClass, Refusal> {
    Ok(match node {
        N::SelectStmt(_) | N::VariableShowStmt(_) => StatementClass::Read,
        // EXPLAIN takes its target's class, with or without ANALYZE.
        N::ExplainStmt(explain) => {
            let target = explain
                .query
                .as_ref()
                .and_then(|query| query.node.as_ref())
                .ok_or_else(|| {
                    Refusal::new(
                        codes::SQL_PARSE_ERROR,
                        "parse",
                        "EXPLAIN without a statement",
                    )
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
