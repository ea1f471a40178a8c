//! PostgreSQL delegation module.
//!
//! One instance per `delegation.modules.postgresqlN` entry, each with its own
//! r2d2 pool, serving `<prefix>-delegate`, `<prefix>-schema` and
//! `<prefix>-table-details`.
//!
//! Status: the instance, its pool and its health probe are real; the three
//! tools answer `NOT_IMPLEMENTED` until delegated execution lands (issue 4).

mod config;
mod pool;
mod tools;

use mcp_delegate_plugin_api::{
    codes, export_module, CallContext, ConfigReport, HealthReport, Module, ModuleFactory,
    ModuleInfo, ToolError, ToolSpec,
};
use serde_json::Value;

use crate::config::PgModuleConfig;
use crate::pool::PgPool;

pub struct PostgresFactory;

pub struct PostgresModule {
    instance_name: String,
    pool: PgPool,
}

impl ModuleFactory for PostgresFactory {
    type Instance = PostgresModule;

    fn info() -> ModuleInfo {
        ModuleInfo {
            kind: "postgresql".into(),
            default_tool_prefix: "sql".into(),
            display_name: "PostgreSQL".into(),
            tool_family: "SQL".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn validate_config(config: &Value) -> ConfigReport {
        config::parse(config).1
    }

    fn new_instance(instance_name: &str, config: Value) -> Result<PostgresModule, String> {
        let (parsed, report) = config::parse(&config);
        let parsed: PgModuleConfig = match parsed {
            Some(parsed) if report.errors.is_empty() => parsed,
            _ => {
                let first = report
                    .errors
                    .first()
                    .map(|issue| format!("{}: {}", issue.path, issue.message))
                    .unwrap_or_else(|| "invalid config".into());
                return Err(first);
            }
        };
        tracing::info!(
            "Initializing connection to {}@{}:{}...",
            parsed.database,
            parsed.host,
            parsed.port
        );
        let pool = PgPool::new(instance_name, &parsed)?;
        tracing::info!("PostgreSQL connection initialized for {instance_name}");
        Ok(PostgresModule {
            instance_name: instance_name.to_owned(),
            pool,
        })
    }
}

impl Module for PostgresModule {
    fn tools(&self) -> Vec<ToolSpec> {
        tools::specs()
    }

    fn call(&self, tool: &str, _context: &CallContext, _args: Value) -> Result<Value, ToolError> {
        if !tools::NAMES.contains(&tool) {
            return Err(ToolError::new(
                codes::UNKNOWN_TOOL,
                format!("unknown tool '{tool}'"),
            ));
        }
        Err(ToolError::new(
            codes::NOT_IMPLEMENTED,
            format!(
                "'{tool}' of module '{}' is not implemented yet: delegated SQL execution \
                 arrives with the PostgreSQL delegation work",
                self.instance_name
            ),
        ))
    }

    fn health(&self) -> HealthReport {
        self.pool.health()
    }

    fn shutdown(&self) {
        tracing::info!(module = %self.instance_name, "closing PostgreSQL pool");
    }
}

export_module!(PostgresFactory);
