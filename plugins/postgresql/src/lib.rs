//! PostgreSQL delegation module.
//!
//! One instance per `delegation.modules.postgresqlN` entry, each with its own
//! pool, serving `<prefix>-delegate`, `<prefix>-schema` and
//! `<prefix>-table-details`. Every call runs as the caller's delegated
//! database role inside one pipelined transaction (`execute`), after the
//! SQL policy (`policy`) has accepted the statement.

mod batch;
mod config;
mod execute;
mod identity;
mod policy;
mod pool;
mod profile;
mod result;
mod service_query;
mod sql;
mod tools;
mod types;
mod values;
mod wire;

use mcp_delegate_plugin_api::{
    codes, export_module, CallContext, CallFacts, ConfigReport, HealthReport, Module,
    ModuleFactory, ModuleInfo, ToolAccess, ToolError, ToolSpec,
};
use serde_json::Value;

use crate::config::PgModuleConfig;
use crate::identity::IdentityCache;
use crate::pool::PgPool;
use crate::profile::{Profile, ProfileCheck};
use crate::values::TypeCache;

pub struct PostgresFactory;

pub struct PostgresModule {
    instance_name: String,
    config: PgModuleConfig,
    pool: PgPool,
    types: TypeCache,
    verdicts: policy::VerdictCache,
    profile: ProfileCheck,
    identities: IdentityCache,
    /// The database's one-argument functions (for the policy's view of
    /// attribute notation), loaded with the profile.
    user_functions: policy::UserFunctions,
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
            tool_access: ToolAccess::UserOrAdmin,
            instructions: Some(
                "Query PostgreSQL databases as your own database role: {prefix}-delegate runs \
                 SQL, {prefix}-schema lists tables, {prefix}-table-details describes one."
                    .into(),
            ),
        }
    }

    fn validate_config(config: &Value) -> ConfigReport {
        let (parsed, mut report) = config::parse(config);
        // A call holds at most one connection: the pool bounds how many
        // run at once.
        if let Some(parsed) = parsed {
            report.concurrency = Some(parsed.pool.max);
            report.busy = Some(mcp_delegate_plugin_api::BusyAnswer {
                wait_millis: parsed.pool.connection_timeout_millis,
                code: codes::POOL_EXHAUSTED.to_owned(),
                hint: "raise pool.max or pool.connectionTimeoutMillis".to_owned(),
            });
        }
        report
    }

    /// `db-setup`: the SQL of the hardening profiles (see profile.rs).
    fn command(name: &str, config: &Value, args: &Value) -> Result<String, String> {
        if name != "db-setup" {
            return Err(format!("the PostgreSQL module has no '{name}' command"));
        }
        let (parsed, report) = config::parse(config);
        let parsed = parsed
            .filter(|_| report.errors.is_empty())
            .ok_or_else(|| "the module entry is not valid (run check-config)".to_owned())?;
        let module = args.get("module").and_then(Value::as_str).unwrap_or("?");
        let roles: Vec<String> = args
            .get("roles")
            .and_then(Value::as_array)
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(profile::setup_sql(module, &parsed.user, &roles))
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
        let max_sql_tokens = parsed.max_sql_tokens;
        let module = PostgresModule {
            instance_name: instance_name.to_owned(),
            profile: ProfileCheck::new(parsed.service_account_check),
            config: parsed,
            pool,
            types: TypeCache::default(),
            verdicts: policy::VerdictCache::new(max_sql_tokens),
            identities: IdentityCache::default(),
            user_functions: policy::UserFunctions::default(),
        };
        tracing::info!("PostgreSQL connection initialized for {instance_name}");
        Ok(module)
    }
}

impl PostgresModule {
    fn run_tool(
        &self,
        tool: &str,
        context: &CallContext,
        args: Value,
        facts: &mut CallFacts,
    ) -> Result<String, ToolError> {
        match tool {
            "delegate" => tools::delegate::run(self, context, &args, facts),
            "schema" => tools::catalog::schema(self, context, &args).map(|v| v.to_string()),
            "table-details" => tools::catalog::table_details(self, context, &args),
            _ => Err(ToolError::new(
                codes::UNKNOWN_TOOL,
                format!("unknown tool '{tool}'"),
            )),
        }
    }

    /// Refuses every call while the service account's profile is unsafe
    /// (or unknown: it is checked before the first call, and again once
    /// [`profile::RECHECK_AFTER`] has passed).
    fn ensure_service_account_safe(&self) -> Result<(), ToolError> {
        let fresh = self.profile.fresh();
        let names_stale = self.user_functions.is_stale(profile::RECHECK_AFTER);
        if let (Some(profile), false) = (&fresh, names_stale) {
            return self.profile.gate(profile);
        }
        let mut connection = self.pool.get()?;
        let profile = match fresh {
            Some(profile) => profile,
            None => self.profile.run(&self.instance_name, &mut connection),
        };
        if names_stale {
            self.load_user_functions(&mut connection)?;
        }
        self.profile.gate(&profile)
    }

    /// Loads the names attribute notation can call (see
    /// `policy::catalog`); a failure refuses the call rather than judging
    /// with stale names.
    fn load_user_functions(&self, connection: &mut wire::Connection) -> Result<(), ToolError> {
        let result = service_query::simple(connection, sql::USER_FUNCTIONS)
            .map_err(|err| execute::connection_lost(&err))?;
        if let Some(error) = result.error {
            return Err(execute::database_error(&error));
        }
        let pairs = result
            .rows
            .into_iter()
            .filter_map(|row| {
                let mut fields = row.into_iter();
                Some((fields.next()??, fields.next()??))
            })
            .collect();
        self.user_functions.replace(pairs);
        Ok(())
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
        self.call_with_facts(tool, context, args).0
    }

    fn call_with_facts(
        &self,
        tool: &str,
        context: &CallContext,
        args: Value,
    ) -> (Result<String, ToolError>, Option<CallFacts>) {
        let mut facts = CallFacts::default();
        PgPool::start_call();
        let result = self.run_tool(tool, context, args, &mut facts);
        if context.want_facts {
            facts.pool = Some(self.pool.facts());
            (result, Some(facts))
        } else {
            (result, None)
        }
    }

    /// Connects, asks the server who it is, and checks the service
    /// account's profile again.
    fn health(&self) -> HealthReport {
        let mut connection = match self.pool.get() {
            Ok(connection) => connection,
            Err(error) => {
                let mut report = HealthReport {
                    healthy: false,
                    detail: error.message,
                    ..HealthReport::default()
                };
                if let Some(profile) = self.profile.last() {
                    report
                        .status
                        .insert("profile".into(), profile.name().into());
                }
                return report;
            }
        };
        let described = PgPool::describe(&mut connection);
        let profile = self.profile.run(&self.instance_name, &mut connection);
        let refused = self.profile.gate(&profile).err();
        let mut report = match (described, refused) {
            (Err(detail), _) => HealthReport {
                healthy: false,
                detail,
                ..HealthReport::default()
            },
            (Ok(_), Some(refusal)) => HealthReport {
                healthy: false,
                detail: refusal.message,
                ..HealthReport::default()
            },
            (Ok(detail), None) => HealthReport {
                healthy: true,
                detail,
                ..HealthReport::default()
            },
        };
        report
            .status
            .insert("profile".into(), profile.name().into());
        if let Profile::Unsafe(reason) = &profile {
            report
                .status
                .insert("profileReason".into(), reason.clone().into());
        }
        report
    }

    fn shutdown(&self) {
        tracing::info!(module = %self.instance_name, "closing PostgreSQL pool");
    }
}

export_module!(PostgresFactory);
