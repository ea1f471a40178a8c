//! `<prefix>-delegate`: one SQL statement, as the caller's database role.

use mcp_delegate_plugin_api::{codes, CallContext, CallFacts, ToolError};
use serde_json::{json, Value};

use crate::execute::{self, Delegation};
use crate::policy::{self, StatementClass};
use crate::result::ResultWriter;
use crate::{types, PostgresModule};

/// A JSON parameter as node-postgres sends it: text, typed by the server.
fn parameter_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        Value::Array(items) => Some(array_literal(items)),
        Value::Object(_) => Some(value.to_string()),
    }
}

/// `[1, "a b", null]` → `{"1","a b",NULL}` (node-postgres' array literal).
fn array_literal(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| match item {
            Value::Null => "NULL".to_owned(),
            Value::Array(inner) => array_literal(inner),
            other => {
                let text = parameter_text(other).unwrap_or_default();
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

pub(crate) fn identity(context: &CallContext) -> Result<&str, ToolError> {
    context.delegated_identity.as_deref().ok_or_else(|| {
        ToolError::new(
            codes::DELEGATED_IDENTITY_MISSING,
            "no database identity for this call; refusing to run as the service account",
        )
    })
}

fn refusal_error(refusal: policy::Refusal) -> ToolError {
    let mut error = ToolError::new(refusal.code, refusal.message).with("reason", refusal.reason);
    if let Some(kind) = refusal.statement_kind {
        error = error.with("statementKind", kind.as_ref());
    }
    if let Some(role) = refusal.required_role {
        error = error.with("requiredRole", role);
    }
    if let Some(function) = refusal.function {
        error = error.with("function", function.as_ref());
    }
    if let Some(operator) = refusal.operator {
        error = error.with("operator", operator.as_ref());
    }
    error
}

/// `SELECT 3` → (`SELECT`, 3); `INSERT 0 1` → (`INSERT`, 1); `CREATE TABLE` → (`CREATE TABLE`, None).
fn parse_tag(tag: &str) -> (String, Option<u64>) {
    let words: Vec<&str> = tag.split_whitespace().collect();
    let count = words.last().and_then(|word| word.parse::<u64>().ok());
    let command: Vec<&str> = words
        .iter()
        .copied()
        .filter(|word| word.parse::<u64>().is_err())
        .collect();
    (command.join(" "), count)
}

fn change_message(command: &str, count: u64) -> Option<String> {
    let verb = match command {
        "INSERT" => "inserted",
        "UPDATE" => "updated",
        "DELETE" => "deleted",
        "MERGE" => "merged",
        _ => return None,
    };
    Some(format!(
        "Successfully {verb} {count} row{}",
        if count == 1 { "" } else { "s" }
    ))
}

/// Runs the tool; the result is the JSON text of the result object.
/// What the statement was and did goes to `facts` as it becomes known.
pub fn run(
    module: &PostgresModule,
    context: &CallContext,
    args: &Value,
    facts: &mut CallFacts,
) -> Result<String, ToolError> {
    match args.get("action").and_then(Value::as_str) {
        Some("query") => {}
        _ => {
            return Err(ToolError::new(
                codes::INVALID_ARGUMENTS,
                "'action' must be \"query\"",
            ))
        }
    }
    let sql = args
        .get("sql")
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError::new(codes::INVALID_ARGUMENTS, "'sql' must be a string"))?;
    let params: Vec<Option<String>> = match args.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(parameter_text).collect(),
        Some(_) => {
            return Err(ToolError::new(
                codes::INVALID_ARGUMENTS,
                "'params' must be an array",
            ))
        }
    };
    let identity = identity(context)?;
    // Judged with the function names known now (refusals need no
    // database), then again if checking the service account loaded newer
    // ones.
    let judge = |facts: &mut CallFacts| {
        let names = module.user_functions.current();
        let judged = module
            .verdicts
            .analyze(sql, &module.config.allowed, &names)
            .and_then(
                |verdict| match policy::authorize(&verdict, &context.delegated_roles) {
                    Ok(()) => Ok(verdict),
                    Err(mut refusal) => {
                        refusal.audit_text = Some(Box::new(verdict.audit_text.clone()));
                        Err(refusal)
                    }
                },
            );
        match judged {
            Ok(verdict) => Ok((verdict, names.generation)),
            Err(refusal) => {
                // Refused statements are audited too (normalized: no
                // literal), as far as they parsed within the size bound.
                facts.refusal_reason = Some(refusal.reason.to_owned());
                if let Some(text) = &refusal.audit_text {
                    facts.fingerprint = text.fingerprint.as_deref().map(str::to_owned);
                    facts.normalized = text.normalized.as_deref().map(str::to_owned);
                }
                Err(refusal_error(refusal))
            }
        }
    };
    let (mut verdict, generation) = judge(facts)?;
    module.ensure_service_account_safe()?;
    if module.user_functions.current().generation != generation {
        verdict = judge(facts)?.0;
    }
    if context.want_facts {
        facts.statement_class = Some(verdict.class.label().to_owned());
        facts.statement_kind = Some(verdict.kind.clone());
        facts.fingerprint = verdict.audit_text.fingerprint.as_deref().map(str::to_owned);
        facts.normalized = verdict.audit_text.normalized.as_deref().map(str::to_owned);
    }
    if verdict.parameter_count != params.len() {
        return Err(ToolError::new(
            codes::SQL_PARAMETER_COUNT,
            format!(
                "the statement takes {} parameter(s) but {} were given",
                verdict.parameter_count,
                params.len()
            ),
        )
        .with("expected", verdict.parameter_count)
        .with("given", params.len()));
    }
    let delegation = Delegation {
        identity,
        read_only: verdict.class == StatementClass::Read,
        attribution: execute::Attribution::of(context),
    };
    let param_refs: Vec<Option<&str>> = params.iter().map(Option::as_deref).collect();
    // Column types that are not built in are looked up on a second
    // connection: this one is busy reading the result.
    let mut resolve = |oids: &[u32]| {
        if let Some(mut other) = module.pool.get_within(TYPE_LOOKUP_WAIT) {
            types::resolve(&module.types, &mut other, oids);
        }
    };
    let mut writer = ResultWriter::new(
        &module.types,
        &mut resolve,
        module.config.max_result_bytes,
        module.config.max_rows,
        delegation.read_only,
    );
    let batch_after = crate::pool::micros_since_call_start();
    let batch_started = std::time::Instant::now();
    let ran = execute::run_pooled(
        &module.pool,
        &module.identities,
        &delegation,
        sql,
        &param_refs,
        &mut writer,
        module.config.max_rows,
    );
    facts.database_after_micros = Some(batch_after);
    facts.database_micros =
        Some(u64::try_from(batch_started.elapsed().as_micros()).unwrap_or(u64::MAX));
    if let Err(error) = &ran {
        // A name the database does not know may have been a value written
        // as an identifier (`WHERE password = "hunter2"`): the audit log
        // keeps only the fingerprint.
        let sqlstate = error.details.get("sqlstate").and_then(Value::as_str);
        if matches!(sqlstate, Some("42703" | "42P01" | "42883" | "42704")) {
            facts.normalized = None;
        }
    }
    let (outcome, connection) = ran?;
    drop(connection);
    if outcome.abandoned || writer.too_large() {
        let limit = module.config.max_result_bytes;
        let message = if !delegation.read_only {
            // A write is read to its end: it committed (a failed one was
            // an error above), only its result could not be returned.
            format!(
                "the statement ran and was committed, but its result's first row alone is \
                 larger than maxResultBytes ({limit} bytes) and is not returned"
            )
        } else if writer.too_large() {
            format!(
                "the result's first row alone is larger than maxResultBytes ({limit} bytes); \
                 select fewer or smaller columns"
            )
        } else {
            format!(
                "the result is far larger than maxResultBytes ({limit} bytes); the statement \
                 was cancelled and nothing is returned: add LIMIT or select less"
            )
        };
        let mut error =
            ToolError::new(codes::RESULT_TOO_LARGE, message).with("maxResultBytes", limit);
        if !delegation.read_only {
            error = error.with("committed", true);
        }
        return Err(error);
    }
    let (command, tag_count) = outcome
        .command_tag
        .as_deref()
        .map(parse_tag)
        .unwrap_or_else(|| (verdict.kind.clone(), None));
    facts.rows = Some(tag_count.unwrap_or(writer.rows()));
    facts.truncated = Some(writer.truncated());
    if !writer.has_columns() {
        let count = tag_count.unwrap_or(0);
        return Ok(match change_message(&command, count) {
            Some(message) => {
                json!({"rowCount": count, "command": command, "message": message}).to_string()
            }
            None => json!({"columns": [], "rows": [], "command": command,
                           "rowCount": count, "truncated": false})
            .to_string(),
        });
    }
    Ok(writer.finish(&command))
}

/// How long a call waits for a second connection to look up column types.
const TYPE_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_messages() {
        assert_eq!(parse_tag("INSERT 0 1"), ("INSERT".into(), Some(1)));
        assert_eq!(parse_tag("SELECT 12"), ("SELECT".into(), Some(12)));
        assert_eq!(parse_tag("CREATE TABLE"), ("CREATE TABLE".into(), None));
        assert_eq!(
            change_message("INSERT", 1).unwrap(),
            "Successfully inserted 1 row"
        );
        assert_eq!(
            change_message("UPDATE", 3).unwrap(),
            "Successfully updated 3 rows"
        );
        assert_eq!(
            array_literal(&[json!(1), json!("a \"b\""), Value::Null]),
            r#"{"1","a \"b\"",NULL}"#
        );
    }
}
