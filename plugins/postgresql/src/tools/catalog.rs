//! `<prefix>-schema` and `<prefix>-table-details`: the catalog, as the
//! caller's role sees it (each query runs delegated, read-only, so
//! privilege checks are the caller's).

use mcp_delegate_plugin_api::{codes, CallContext, ToolError};
use serde_json::{json, Value};

use super::delegate::identity;
use crate::execute::{self, Delegation};
use crate::PostgresModule;

/// Tables, views, materialized views, foreign and partitioned tables the
/// role holds any privilege on, in a schema it may use.
const SCHEMA_SQL: &str = "\
SELECT c.relname::text,
       CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' END,
       obj_description(c.oid, 'pg_class'),
       GREATEST(c.reltuples, 0)::float8::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1
  AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
  AND has_schema_privilege(n.oid, 'USAGE')
  AND has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
ORDER BY c.relname";

/// One JSON document describing a table the role may see (no row if not).
const TABLE_SQL: &str = "\
WITH t AS (
  SELECT c.oid, c.relname, n.nspname
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
    AND has_schema_privilege(n.oid, 'USAGE')
    AND has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
)
SELECT json_build_object(
  'table', t.relname,
  'schema', t.nspname,
  'comment', obj_description(t.oid, 'pg_class'),
  'columns', (
    SELECT coalesce(json_agg(json_build_object(
      'name', a.attname,
      'type', format_type(a.atttypid, a.atttypmod),
      'nullable', NOT a.attnotnull,
      'default', pg_get_expr(d.adbin, d.adrelid),
      'maxLength', CASE WHEN a.atttypid IN (1042, 1043) AND a.atttypmod > 0 THEN a.atttypmod - 4 END,
      'comment', col_description(t.oid, a.attnum)) ORDER BY a.attnum), '[]')
    FROM pg_catalog.pg_attribute a
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
      AND has_column_privilege(t.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES')),
  'primaryKey', (
    SELECT coalesce(json_agg(a.attname ORDER BY k.ord), '[]')
    FROM pg_catalog.pg_constraint con
    CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
    WHERE con.conrelid = t.oid AND con.contype = 'p'),
  'foreignKeys', (
    SELECT coalesce(json_agg(json_build_object(
      'name', con.conname,
      'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                  FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                  JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
      'references', json_build_object(
        'schema', rn.nspname,
        'table', rc.relname,
        'columns', (SELECT json_agg(a.attname ORDER BY k.ord)
                    FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum))
    ) ORDER BY con.conname), '[]')
    FROM pg_catalog.pg_constraint con
    JOIN pg_catalog.pg_class rc ON rc.oid = con.confrelid
    JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
    WHERE con.conrelid = t.oid AND con.contype = 'f'),
  'indexes', (
    SELECT coalesce(json_agg(json_build_object(
      'name', ic.relname, 'definition', pg_get_indexdef(i.indexrelid), 'unique', i.indisunique
    ) ORDER BY ic.relname), '[]')
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    WHERE i.indrelid = t.oid),
  'checkConstraints', (
    SELECT coalesce(json_agg(json_build_object(
      'name', con.conname, 'definition', pg_get_constraintdef(con.oid)) ORDER BY con.conname), '[]')
    FROM pg_catalog.pg_constraint con
    WHERE con.conrelid = t.oid AND con.contype = 'c')
)::text
FROM t";

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
    };
    let (outcome, _connection) =
        execute::run_pooled(&module.pool, &delegation, sql, params, u64::from(u32::MAX))?;
    Ok(outcome.rows.to_owned_rows())
}

pub fn schema(
    module: &PostgresModule,
    context: &CallContext,
    args: &Value,
) -> Result<Value, ToolError> {
    let schema = string_arg(args, "schemaName", Some("public"))?;
    let rows = catalog_query(module, context, SCHEMA_SQL, &[Some(schema)])?;
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

pub fn table_details(
    module: &PostgresModule,
    context: &CallContext,
    args: &Value,
) -> Result<Value, ToolError> {
    let table = string_arg(args, "tableName", None)?;
    let schema = string_arg(args, "schemaName", Some("public"))?;
    let rows = catalog_query(module, context, TABLE_SQL, &[Some(schema), Some(table)])?;
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
    let mut details: Value = serde_json::from_str(&document).map_err(|err| {
        ToolError::new(
            codes::INTERNAL_ERROR,
            format!("unreadable catalog answer: {err}"),
        )
    })?;
    let column_count = details["columns"].as_array().map_or(0, Vec::len);
    details["columnCount"] = json!(column_count);
    Ok(details)
}
