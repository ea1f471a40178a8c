//! The one place every `tools/call` passes, whichever MCP path it came
//! by (rmcp's handler or the direct path): tool lookup and access, the
//! caller's delegated identity, the plugin call on a blocking thread, and
//! the log line. Metrics and audit hook in here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mcp_delegate_plugin_api::{codes, CallContext, ToolError};
use serde_json::{json, Value};

use crate::auth::exchange::TokenExchanger;
use crate::auth::{may_use, Credentials, Principal};
use crate::builtin::HostStatus;
use crate::json::RawJson;
use crate::registry::{ExposedTool, Registry, Route};
use crate::status::{Generation, ReloadLog};

/// Request ids stay unique across reloads.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// The calls of one generation: its tools, and how its module calls get
/// their database identities.
pub struct CallCore {
    registry: Arc<Registry>,
    /// Per module name, when the module has `tokenExchange`.
    exchangers: HashMap<String, Arc<TokenExchanger>>,
    generation: Generation,
    reload_log: Arc<ReloadLog>,
}

/// What a `tools/call` came to, before any protocol encoding.
pub enum ToolCallReply {
    /// Unknown, disabled and hidden tools look the same: a protocol error
    /// (JSON-RPC invalid params), never a tool result.
    UnknownTool,
    /// The tool ran (or was refused before running): a tool result.
    Completed(Result<RawJson, ToolError>),
}

impl CallCore {
    pub fn new(
        registry: Arc<Registry>,
        exchangers: HashMap<String, Arc<TokenExchanger>>,
        generation: Generation,
        reload_log: Arc<ReloadLog>,
    ) -> Self {
        Self {
            registry,
            exchangers,
            generation,
            reload_log,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The token exchanger of `module`, if it has one.
    pub fn exchanger(&self, module: &str) -> Option<&Arc<TokenExchanger>> {
        self.exchangers.get(module)
    }

    /// One `tools/call`: access, delegated identity, the plugin call on a
    /// blocking thread, and the log line.
    pub async fn call_tool(
        self: &Arc<Self>,
        name: &str,
        credentials: Option<&Credentials>,
        args_json: String,
    ) -> ToolCallReply {
        let principal = credentials.map(|c| c.principal.clone());
        let Some(position) = self.registry.tool_position(name).filter(|&position| {
            may_use(self.registry.tools()[position].access, principal.as_deref())
        }) else {
            return ToolCallReply::UnknownTool;
        };
        let tool = &self.registry.tools()[position];
        let request_id = format!("req-{}", NEXT_REQUEST.fetch_add(1, Ordering::Relaxed));
        let started = Instant::now();
        let call_context = match &tool.route {
            Route::Module { module, .. } => {
                self.module_context(&module.name, credentials, request_id.clone())
                    .await
            }
            Route::Builtin(_) => Ok(match &principal {
                Some(principal) => principal_context(principal, request_id.clone()),
                None => CallContext {
                    request_id: request_id.clone(),
                    ..CallContext::default()
                },
            }),
        };
        let result = match call_context {
            Ok(call_context) => {
                self.run_blocking(position, call_context, principal, args_json)
                    .await
            }
            Err(error) => Err(error),
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let user = credentials.map_or("-", |c| c.principal.user_id.as_str());
        let idp = credentials.map_or("-", |c| c.principal.idp.as_str());
        match &result {
            Ok(_) => {
                tracing::info!(tool = %name, %request_id, user, idp, elapsed_ms, "tool call ok");
            }
            Err(error) => {
                tracing::info!(tool = %name, %request_id, user, idp, elapsed_ms, code = %error.error, "tool call failed");
            }
        }
        ToolCallReply::Completed(result)
    }

    /// The call context for a module tool: who calls, and as which database
    /// identity. Errors are tool errors; nothing has run yet.
    async fn module_context(
        &self,
        module: &str,
        credentials: Option<&Credentials>,
        request_id: String,
    ) -> Result<CallContext, ToolError> {
        let Some(credentials) = credentials else {
            return Ok(CallContext {
                request_id,
                ..CallContext::default()
            });
        };
        let principal = &credentials.principal;
        if let Some(entry) = self.registry.entries.get(module) {
            let missing: Vec<&String> = entry
                .required_scopes
                .iter()
                .filter(|scope| !principal.scopes.contains(scope))
                .collect();
            if !missing.is_empty() {
                return Err(ToolError::new(
                    codes::INSUFFICIENT_SCOPE,
                    format!(
                        "module '{module}' requires the scope(s): {}",
                        join(&missing)
                    ),
                )
                .with("requiredScopes", json!(missing)));
            }
        }
        let (identity, roles) = match self.exchangers.get(module) {
            Some(exchanger) => {
                let delegated = exchanger.delegate(credentials).await?;
                (delegated.identity.clone(), delegated.roles.clone())
            }
            None => {
                let identity = principal.legacy_username.clone().ok_or_else(|| {
                    ToolError::new(
                        codes::DELEGATED_IDENTITY_MISSING,
                        format!(
                            "the token has no '{}' claim, so there is no database identity to run as",
                            principal.legacy_username_claim
                        ),
                    )
                    .with("claim", principal.legacy_username_claim.clone())
                })?;
                (identity, principal.delegated_roles.clone())
            }
        };
        Ok(CallContext {
            delegated_identity: Some(identity),
            delegated_roles: roles,
            ..principal_context(principal, request_id)
        })
    }

    /// Runs one tool call to completion. Blocking: plugin code runs here.
    fn dispatch(
        &self,
        tool: &ExposedTool,
        context: &CallContext,
        principal: Option<&Principal>,
        args_json: &str,
    ) -> Result<RawJson, ToolError> {
        match &tool.route {
            Route::Module { module, tool } => module.call(tool, context, args_json),
            Route::Builtin(builtin) => {
                let args: Value = serde_json::from_str(args_json).map_err(|err| {
                    ToolError::new(
                        codes::INVALID_ARGUMENTS,
                        format!("the arguments are not JSON: {err}"),
                    )
                })?;
                let status = HostStatus {
                    modules: &self.registry.modules,
                    generation: &self.generation,
                    reload_log: &self.reload_log,
                };
                builtin
                    .call(&status, principal, &args)
                    .map(|value| RawJson::from_value(&value))
            }
        }
    }

    /// Plugins are synchronous and may block on I/O: keep them off the
    /// runtime's worker threads.
    async fn run_blocking(
        self: &Arc<Self>,
        position: usize,
        context: CallContext,
        principal: Option<Arc<Principal>>,
        args_json: String,
    ) -> Result<RawJson, ToolError> {
        let core = self.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let tool = &core.registry.tools()[position];
            core.dispatch(tool, &context, principal.as_deref(), &args_json)
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(join_error) => Err(ToolError::new(
                codes::PLUGIN_PANIC,
                format!(
                    "the tool call failed unexpectedly ({join_error}); the server keeps running"
                ),
            )),
        }
    }
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn principal_context(principal: &Principal, request_id: String) -> CallContext {
    CallContext {
        request_id,
        user_id: Some(principal.user_id.clone()),
        username: principal.username.clone(),
        role: Some(principal.role.clone()),
        custom_roles: principal.custom_roles.clone(),
        scopes: principal.scopes.clone(),
        delegated_identity: None,
        delegated_roles: Vec::new(),
    }
}
