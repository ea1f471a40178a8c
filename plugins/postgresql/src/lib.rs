//! PostgreSQL delegation module.
//!
//! One instance per `delegation.modules.postgresqlN` entry, each with its own
//! pool, serving `<prefix>-delegate`, `<prefix>-schema` and
//! `<prefix>-table-details`. Every call runs as the caller's delegated
//! database role inside one pipelined transaction (`execute`), after the
//! SQL policy (`policy`) has accepted the statement.

mod account;
mod config;
mod execute;
mod policy;
mod pool;
mod tools;
mod types;
mod values;
mod wire;

use std::sync::Arc;

use mcp_delegate_plugin_api::{
    codes, export_module, CallContext, ConfigReport, HealthReport, Module, ModuleFactory,
    ModuleInfo, ToolError, ToolSpec,
};
use serde_json::Value;

use crate::account::{AccountCheck, AccountState};
use crate::config::PgModuleConfig;
use crate::pool::PgPool;
use crate::values::TypeCache;

pub struct PostgresFactory;

pub struct PostgresModule {
    instance_name: String,
    config: PgModuleConfig,
    pool: PgPool,
    types: TypeCache,
    verdicts: policy::VerdictCache,
    account: Arc<AccountCheck>,
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
        let module = PostgresModule {
            instance_name: instance_name.to_owned(),
            config: parsed,
            pool,
            types: TypeCache::default(),
            verdicts: policy::VerdictCache::default(),
            account: Arc::new(AccountCheck::new()),
        };
        tracing::info!("PostgreSQL connection initialized for {instance_name}");
        Ok(module)
    }
}

impl PostgresModule {
    /// Refuses every call while the service account is unsafe; checks it
    /// on first use if startup could not (the database was down).
    fn ensure_service_account_safe(&self) -> Result<(), ToolError> {
        if self.account.state() == AccountState::Unchecked {
            let mut connection = self.pool.get()?;
            self.account.run(&self.instance_name, &mut connection);
        }
        match self.account.refusal() {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }
}

impl Module for PostgresModule {
    fn tools(&self) -> Vec<ToolSpec> {
        tools::specs()
    }

    fn call(&self, tool: &str, context: &CallContext, args: Value) -> Result<Value, ToolError> {
        let text = self.call_json(tool, context, args)?;
        serde_json::from_str(&text).map_err(|err| {
            ToolError::new(codes::INTERNAL_ERROR, format!("unreadable result: {err}"))
        })
    }

    /// `delegate` writes its rows straight into JSON text (see `values`).
    fn call_json(
        &self,
        tool: &str,
        context: &CallContext,
        args: Value,
    ) -> Result<String, ToolError> {
        match tool {
            "delegate" => tools::delegate::run(self, context, &args),
            "schema" => tools::catalog::schema(self, context, &args).map(|v| v.to_string()),
            "table-details" => {
                tools::catalog::table_details(self, context, &args).map(|v| v.to_string())
            }
            _ => Err(ToolError::new(
                codes::UNKNOWN_TOOL,
                format!("unknown tool '{tool}'"),
            )),
        }
    }

    fn health(&self) -> HealthReport {
        if let Some(refusal) = self.account.refusal() {
            return HealthReport {
                healthy: false,
                detail: refusal.message,
            };
        }
        self.pool.health()
    }

    fn shutdown(&self) {
        tracing::info!(module = %self.instance_name, "closing PostgreSQL pool");
    }
}

export_module!(PostgresFactory);
