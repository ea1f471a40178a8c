//! The three tools' specs (names, inputs and outputs as in the seed).

use mcp_delegate_plugin_api::{ToolAnnotations, ToolSpec};
use serde_json::json;

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "delegate".into(),
            description: "Run one SQL statement as your own database role. Reads run in a \
                          read-only transaction; what you may do is decided by your roles \
                          and PostgreSQL's grants and row-level security."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["query"], "description": "Always 'query'."},
                    "sql": {"type": "string", "description": "One SQL statement; use $1, $2 … for parameters."},
                    "params": {"type": "array", "description": "Parameter values (strings, numbers, booleans, null)."},
                    "resource": {"type": "string", "description": "Accepted for compatibility; ignored."}
                },
                "required": ["action", "sql"]
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string"},
                    "columns": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}},
                    "rows": {"type": "array", "items": {"type": "object"}},
                    "rowCount": {"type": "integer"},
                    "truncated": {"type": "boolean"}
                }
            })),
            annotations: Some(ToolAnnotations {
                destructive_hint: Some(true),
                ..ToolAnnotations::default()
            }),
        },
        ToolSpec {
            name: "schema".into(),
            description: "List the tables and views of a schema that your role can see.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"schemaName": {"type": "string", "default": "public"}}
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "schema": {"type": "string"},
                    "tableCount": {"type": "integer"},
                    "tables": {"type": "array", "items": {"type": "object"}}
                }
            })),
            annotations: Some(ToolAnnotations {
                read_only_hint: Some(true),
                ..ToolAnnotations::default()
            }),
        },
        ToolSpec {
            name: "table-details".into(),
            description: "Describe one table: columns, keys, indexes and constraints.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "tableName": {"type": "string"},
                    "schemaName": {"type": "string", "default": "public"}
                },
                "required": ["tableName"]
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "table": {"type": "string"},
                    "schema": {"type": "string"},
                    "columns": {"type": "array", "items": {"type": "object"}}
                }
            })),
            annotations: Some(ToolAnnotations {
                read_only_hint: Some(true),
                ..ToolAnnotations::default()
            }),
        },
    ]
}
