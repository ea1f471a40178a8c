//! Statement kinds: their names, the class each needs, and the kinds no
//! role may run through this tool.

use pg_query::protobuf::node::Node as N;
use pg_query::NodeEnum;

use super::{Refusal, StatementClass};
use mcp_delegate_plugin_api::codes;

/// Statement kinds refused for every role, by top-level node, with the
/// reason category: session and transaction control (the delegated
/// transaction is ours), roles and settings, and everything that defines
/// code the server would run later or reaches outside the database
/// (functions, triggers, rules, operators, casts, languages, extensions,
/// foreign data, replication, tablespaces, databases). Such objects are
/// for migrations, not for agents.
pub(super) fn never_kind(node: &NodeEnum) -> Option<(&'static str, &'static str)> {
    Some(match node {
        N::VariableSetStmt(_) => ("SET", "session-control"),
        N::ConstraintsSetStmt(_) => ("SET CONSTRAINTS", "session-control"),
        N::TransactionStmt(_) => ("TRANSACTION CONTROL", "session-control"),
        N::DiscardStmt(_) => ("DISCARD", "session-control"),
        N::PrepareStmt(_) => ("PREPARE", "session-control"),
        N::ExecuteStmt(_) => ("EXECUTE", "session-control"),
        N::DeallocateStmt(_) => ("DEALLOCATE", "session-control"),
        N::DeclareCursorStmt(_) => ("DECLARE", "session-control"),
        N::FetchStmt(_) => ("FETCH", "session-control"),
        N::ClosePortalStmt(_) => ("CLOSE", "session-control"),
        N::ListenStmt(_) => ("LISTEN", "notify"),
        N::NotifyStmt(_) => ("NOTIFY", "notify"),
        N::UnlistenStmt(_) => ("UNLISTEN", "notify"),
        N::AlterSystemStmt(_) => ("ALTER SYSTEM", "settings"),
        N::AlterDatabaseSetStmt(_) => ("ALTER DATABASE SET", "settings"),
        N::AlterRoleSetStmt(_) => ("ALTER ROLE SET", "settings"),
        N::CreateRoleStmt(_) => ("CREATE ROLE", "roles"),
        N::AlterRoleStmt(_) => ("ALTER ROLE", "roles"),
        N::DropRoleStmt(_) => ("DROP ROLE", "roles"),
        N::GrantRoleStmt(_) => ("GRANT ROLE", "roles"),
        N::ReassignOwnedStmt(_) => ("REASSIGN OWNED", "roles"),
        N::DropOwnedStmt(_) => ("DROP OWNED", "roles"),
        N::SecLabelStmt(_) => ("SECURITY LABEL", "roles"),
        N::DoStmt(_) => ("DO", "code"),
        N::LoadStmt(_) => ("LOAD", "code"),
        N::CreateFunctionStmt(_) => ("CREATE FUNCTION", "code"),
        N::AlterFunctionStmt(_) => ("ALTER FUNCTION", "code"),
        N::CreateTrigStmt(_) => ("CREATE TRIGGER", "code"),
        N::CreateEventTrigStmt(_) => ("CREATE EVENT TRIGGER", "code"),
        N::AlterEventTrigStmt(_) => ("ALTER EVENT TRIGGER", "code"),
        N::RuleStmt(_) => ("CREATE RULE", "code"),
        N::CreatePlangStmt(_) => ("CREATE LANGUAGE", "code"),
        N::CreateExtensionStmt(_) => ("CREATE EXTENSION", "code"),
        N::AlterExtensionStmt(_) => ("ALTER EXTENSION", "code"),
        N::AlterExtensionContentsStmt(_) => ("ALTER EXTENSION", "code"),
        N::CreateCastStmt(_) => ("CREATE CAST", "code"),
        N::CreateTransformStmt(_) => ("CREATE TRANSFORM", "code"),
        // CREATE AGGREGATE / OPERATOR / TYPE (base) / TEXT SEARCH … / COLLATION.
        N::DefineStmt(_) => ("CREATE AGGREGATE, OPERATOR OR TYPE", "code"),
        N::CreateRangeStmt(_) => ("CREATE TYPE AS RANGE", "code"),
        N::CreateOpClassStmt(_) => ("CREATE OPERATOR CLASS", "code"),
        N::CreateOpFamilyStmt(_) => ("CREATE OPERATOR FAMILY", "code"),
        N::AlterOpFamilyStmt(_) => ("ALTER OPERATOR FAMILY", "code"),
        N::CreateConversionStmt(_) => ("CREATE CONVERSION", "code"),
        N::CreateAmStmt(_) => ("CREATE ACCESS METHOD", "code"),
        N::CopyStmt(_) => ("COPY", "files-or-network"),
        N::CreateFdwStmt(_) => ("CREATE FOREIGN DATA WRAPPER", "files-or-network"),
        N::AlterFdwStmt(_) => ("ALTER FOREIGN DATA WRAPPER", "files-or-network"),
        N::CreateForeignServerStmt(_) => ("CREATE SERVER", "files-or-network"),
        N::AlterForeignServerStmt(_) => ("ALTER SERVER", "files-or-network"),
        N::CreateForeignTableStmt(_) => ("CREATE FOREIGN TABLE", "files-or-network"),
        N::ImportForeignSchemaStmt(_) => ("IMPORT FOREIGN SCHEMA", "files-or-network"),
        N::CreateUserMappingStmt(_) => ("CREATE USER MAPPING", "files-or-network"),
        N::AlterUserMappingStmt(_) => ("ALTER USER MAPPING", "files-or-network"),
        N::DropUserMappingStmt(_) => ("DROP USER MAPPING", "files-or-network"),
        N::CreatePublicationStmt(_) => ("CREATE PUBLICATION", "replication"),
        N::AlterPublicationStmt(_) => ("ALTER PUBLICATION", "replication"),
        N::CreateSubscriptionStmt(_) => ("CREATE SUBSCRIPTION", "replication"),
        N::AlterSubscriptionStmt(_) => ("ALTER SUBSCRIPTION", "replication"),
        N::DropSubscriptionStmt(_) => ("DROP SUBSCRIPTION", "replication"),
        N::CreateTableSpaceStmt(_) => ("CREATE TABLESPACE", "files-or-network"),
        N::DropTableSpaceStmt(_) => ("DROP TABLESPACE", "files-or-network"),
        N::AlterTableSpaceOptionsStmt(_) => ("ALTER TABLESPACE", "files-or-network"),
        N::AlterTableMoveAllStmt(_) => ("ALTER TABLE ALL IN TABLESPACE", "files-or-network"),
        N::CreatedbStmt(_) => ("CREATE DATABASE", "databases"),
        N::DropdbStmt(_) => ("DROP DATABASE", "databases"),
        N::AlterDatabaseStmt(_) => ("ALTER DATABASE", "databases"),
        N::AlterDatabaseRefreshCollStmt(_) => ("ALTER DATABASE", "databases"),
        _ => return None,
    })
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

/// The class of one statement node (top level or an EXPLAIN target).
pub(super) fn classify(node: &NodeEnum) -> Result<StatementClass, Refusal> {
    if let Some((kind, reason)) = never_kind(node) {
        return Err(Refusal {
            statement_kind: Some(kind.into()),
            ..Refusal::new(
                codes::SQL_NOT_PERMITTED,
                reason,
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
