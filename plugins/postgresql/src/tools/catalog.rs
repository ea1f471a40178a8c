//! `<prefix>-schema` and `<prefix>-table-details`: the catalog, as the
//! caller's role sees it (each query runs delegated, read-only, so
//! privilege checks are the caller's).

use mcp_delegate_plugin_api::{codes, CallContext, ToolError};
use serde_json::{json, Value};

use super::delegate::identity;
use crate::execute::{self, Delegation};
use crate::wire::CollectRows;
use crate::PostgresModule;

fn string_arg<'a>(
    args: &'a Value,
    name: &str,
    default: Option<&'a str>,
) -> Result<&'a str, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| {
            ToolError::new(codes::INVALID_ARGUMENTS, format!("'{name}' is required"))
        }),
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(_) => Err(ToolError::new(
            codes::INVALID_ARGUMENTS,
            format!("'{name}' must be a non-empty string"),
        )),
    }
}

/// Runs one of our catalog queries delegated and read-only.
fn catalog_query(
    module: &PostgresModule,
    context: &CallContext,
    sql: &str,
    params: &[Option<&str>],
) -> Result<Vec<Vec<Option<String>>>, ToolError> {
    let identity = identity(context)?;
    module.ensure_service_account_safe()?;
    let delegation = Delegation {
        identity,
        read_only: true,
        attribution: execute::Attribution::of(context),
    };
    let mut rows = CollectRows::new(module.config.max_result_bytes);
    execute::run_pooled(
        &module.pool,
        &module.identities,
        &delegation,
        sql,
        params,
        &mut rows,
        u64::from(u32::MAX),
    )?;
    if rows.overflowed {
        return Err(ToolError::new(
            codes::RESULT_TOO_LARGE,
            format!(
                "the catalog answer is larger than maxResultBytes ({} bytes)",
                module.config.max_result_bytes
            ),
        ));
    }
    Ok(rows.rows)
}

pub fn schema(
    module: &PostgresModule,
    context: &CallContext,
    args: &Value,
) -> Result<Value, ToolError> {
    let schema = string_arg(args, "schemaName", Some("public"))?;
    let rows = catalog_query(module, context, crate::sql::SCHEMA, &[Some(schema)])?;
    let tables: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let field = |i: usize| row.get(i).cloned().flatten();
            json!({
                "name": field(0),
                "type": field(1),
                "comment": field(2),
                "estimatedRows": field(3).and_then(|n| n.parse::<f64>().ok()).map(|n| n as u64),
            })
        })
        .collect();
    Ok(json!({"schema": schema, "tableCount": tables.len(), "tables": tables}))
}

/// The table's JSON document as PostgreSQL built it (with `columnCount`),
/// minified: it is passed on without being parsed and written again.
pub fn table_details(
    module: &PostgresModule,
    context: &CallContext,
    args: &Value,
) -> Result<String, ToolError> {
    let table = string_arg(args, "tableName", None)?;
    let schema = string_arg(args, "schemaName", Some("public"))?;
    let rows = catalog_query(
        module,
        context,
        crate::sql::TABLE_DETAILS,
        &[Some(schema), Some(table)],
    )?;
    let document = rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .ok_or_else(|| {
            ToolError::new(
                codes::TABLE_NOT_FOUND,
                format!("no table '{schema}.{table}' that your role can see"),
            )
            .with("schema", schema)
            .with("table", table)
        })?;
    // PostgreSQL's `json` output; the host checks every result once.
    let mut minified = Vec::with_capacity(document.len());
    mcp_delegate_plugin_api::json_text::write_minified(&mut minified, &document);
    String::from_utf8(minified).map_err(|err| {
        ToolError::new(
            codes::INTERNAL_ERROR,
            format!("unreadable catalog answer: {err}"),
        )
    })
}
