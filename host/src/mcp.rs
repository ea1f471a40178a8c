//! The MCP protocol layer. This is the only module that knows rmcp: it turns
//! the [`Registry`] into an rmcp `ServerHandler` served statelessly over
//! Streamable HTTP (any replica can answer any request), for protocol
//! 2026-07-28 (`server/discover`) and the legacy `initialize` flow alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use mcp_delegate_plugin_api::{codes, CallContext, ToolError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};

use crate::auth::exchange::TokenExchanger;
use crate::auth::{Credentials, Principal};
use crate::registry::{Registry, Route};

/// HTTP-level settings of the MCP endpoint.
pub struct EndpointSettings {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_request_bytes: usize,
}

pub type McpService = StreamableHttpService<McpHandler, NeverSessionManager>;

struct McpState {
    registry: Arc<Registry>,
    /// `tools/list` entries, in the registry's (sorted) order, built once.
    listed: Vec<Tool>,
    page_size: usize,
    server_name: String,
    next_request: AtomicU64,
    delegation: Delegation,
}

/// How module calls get their database identities.
pub struct Delegation {
    /// Per module name, when the module has `tokenExchange`.
    pub exchangers: HashMap<String, Arc<TokenExchanger>>,
}

#[derive(Clone)]
pub struct McpHandler(Arc<McpState>);

/// Builds the `/mcp` service. Fails if a plugin declared a tool whose spec
/// is not a valid MCP tool (a plugin bug worth stopping for).
pub fn service(
    registry: Arc<Registry>,
    server_name: String,
    page_size: usize,
    settings: EndpointSettings,
    delegation: Delegation,
) -> Result<McpService, String> {
    let listed = registry
        .tools()
        .iter()
        .map(|tool| to_mcp_tool(&tool.spec))
        .collect::<Result<Vec<_>, _>>()?;
    let handler = McpHandler(Arc::new(McpState {
        registry,
        listed,
        page_size,
        server_name,
        next_request: AtomicU64::new(1),
        delegation,
    }));
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(settings.allowed_hosts)
        .with_max_request_body_bytes(settings.max_request_bytes);
    // Browsers always send Origin: reject every origin not listed, even when
    // none is (rmcp's default skips the check for an empty list).
    config = config
        .with_allowed_origins(settings.allowed_origins)
        .enforce_origin_validation();
    Ok(StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    ))
}

fn to_mcp_tool(spec: &mcp_delegate_plugin_api::ToolSpec) -> Result<Tool, String> {
    let mut value = json!({
        "name": spec.name,
        "description": spec.description,
        "inputSchema": spec.input_schema,
    });
    if let Some(output) = &spec.output_schema {
        value["outputSchema"] = output.clone();
    }
    if let Some(annotations) = &spec.annotations {
        value["annotations"] = serde_json::to_value(annotations).unwrap_or(Value::Null);
    }
    serde_json::from_value(value)
        .map_err(|err| format!("tool '{}' has an invalid spec: {err}", spec.name))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

/// A tool failure as MCP content: `isError`, no structured content, one text
/// block with `{"error": CODE, "message": ..., ...details}`.
fn error_result(error: &ToolError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.to_json())])
}

/// The caller's credentials, attached by the HTTP layer (none when
/// authentication is off).
fn credentials_of(context: &RequestContext<RoleServer>) -> Option<Credentials> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Credentials>())
        .cloned()
}

impl McpState {
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
        let (identity, roles) = match self.delegation.exchangers.get(module) {
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
        name: &str,
        context: &CallContext,
        principal: Option<&Principal>,
        args: &Value,
    ) -> Result<Value, ToolError> {
        let Some(tool) = self.registry.tool(name) else {
            return Err(ToolError::new(
                codes::UNKNOWN_TOOL,
                format!("unknown tool '{name}'"),
            ));
        };
        match &tool.route {
            Route::Module { module, tool } => module.call(tool, context, args),
            Route::Builtin(builtin) => builtin.call(&self.registry, principal, args),
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

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new(&self.0.server_name, env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Query PostgreSQL databases as your own database role. Each database has \
             <prefix>-delegate, <prefix>-schema and <prefix>-table-details tools."
                .to_owned(),
        );
        info
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let credentials = credentials_of(&context);
        let principal = credentials.as_ref().map(|c| c.principal.as_ref());
        // Each user sees only the tools they may call.
        let listed: Vec<&Tool> = self
            .0
            .registry
            .tools()
            .iter()
            .zip(&self.0.listed)
            .filter(|(tool, _)| tool.access.allows(principal))
            .map(|(_, listed)| listed)
            .collect();
        let start = match request.and_then(|params| params.cursor) {
            None => 0,
            Some(cursor) => decode_cursor(&cursor)
                .filter(|&offset| offset <= listed.len())
                .ok_or_else(|| McpError::invalid_params("invalid pagination cursor", None))?,
        };
        let end = (start + self.0.page_size).min(listed.len());
        let mut result = ListToolsResult::with_all_items(
            listed[start..end].iter().map(|t| (*t).clone()).collect(),
        );
        if end < listed.len() {
            result.next_cursor = Some(encode_cursor(end));
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let credentials = credentials_of(&context);
        let principal = credentials.as_ref().map(|c| c.principal.clone());
        let Some(tool) = self
            .0
            .registry
            .tool(&name)
            .filter(|tool| tool.access.allows(principal.as_deref()))
        else {
            // Unknown, disabled and hidden tools look the same: a protocol error.
            return Err(McpError::invalid_params(
                format!("Unknown tool: {name}"),
                None,
            ));
        };
        let args = Value::Object(request.arguments.unwrap_or_default());
        let request_id = format!(
            "req-{}",
            self.0.next_request.fetch_add(1, Ordering::Relaxed)
        );
        let started = Instant::now();
        let call_context = match &tool.route {
            Route::Module { module, .. } => {
                self.0
                    .module_context(&module.name, credentials.as_ref(), request_id.clone())
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
                self.run_blocking(name.clone(), call_context, principal, args)
                    .await
            }
            Err(error) => Err(error),
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let user = credentials
            .as_ref()
            .map_or("-", |c| c.principal.user_id.as_str());
        let idp = credentials
            .as_ref()
            .map_or("-", |c| c.principal.idp.as_str());
        Ok(match result {
            Ok(value) => {
                tracing::info!(tool = %name, %request_id, user, idp, elapsed_ms, "tool call ok");
                CallToolResult::structured(value)
            }
            Err(error) => {
                tracing::info!(tool = %name, %request_id, user, idp, elapsed_ms, code = %error.error, "tool call failed");
                error_result(&error)
            }
        }
        .into())
    }
}

impl McpHandler {
    /// Plugins are synchronous and may block on I/O: keep them off the
    /// runtime's worker threads.
    async fn run_blocking(
        &self,
        name: String,
        context: CallContext,
        principal: Option<Arc<Principal>>,
        args: Value,
    ) -> Result<Value, ToolError> {
        let state = self.0.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            state.dispatch(&name, &context, principal.as_deref(), &args)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("not-a-cursor"), None);
    }
}
