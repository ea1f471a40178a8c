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
use crate::json::RawJson;
use crate::registry::{ExposedTool, Registry, Route};

/// HTTP-level settings of the MCP endpoint.
pub struct EndpointSettings {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_request_bytes: usize,
}

pub mod direct;

/// The largest result the rmcp path returns: it holds a result as a tree
/// of values (several times its size) and encodes it twice. Plain calls in
/// either protocol form take the direct path, which streams any result up
/// to the module's `maxResultBytes`.
const RMCP_PATH_MAX_RESULT: usize = 2 * 1024 * 1024;
pub mod envelope;

pub type McpService = StreamableHttpService<McpHandler, NeverSessionManager>;

/// The `/mcp` endpoint: rmcp's service, and the direct path beside it for
/// plain tools/call requests (see [`direct`]).
pub struct McpEndpoint {
    pub service: McpService,
    pub handler: McpHandler,
    pub hosts: direct::HostAllowList,
}

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

/// A tool spec that is not a valid MCP tool: a plugin bug worth refusing
/// the config for.
#[derive(Debug, thiserror::Error)]
#[error("tool '{tool}' has an invalid spec: {reason}")]
pub struct InvalidToolSpec {
    /// The config path of the module serving it (empty: a built-in tool).
    pub path: String,
    pub tool: String,
    pub reason: String,
}

/// Builds the `/mcp` endpoint.
pub fn endpoint(
    registry: Arc<Registry>,
    server_name: String,
    page_size: usize,
    settings: EndpointSettings,
    delegation: Delegation,
) -> Result<McpEndpoint, InvalidToolSpec> {
    let listed = registry
        .tools()
        .iter()
        .map(|tool| {
            to_mcp_tool(&tool.spec).map_err(|reason| InvalidToolSpec {
                path: match &tool.route {
                    Route::Module { module, .. } => format!("delegation.modules.{}", module.name),
                    Route::Builtin(_) => String::new(),
                },
                tool: tool.spec.name.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let handler = McpHandler(Arc::new(McpState {
        registry,
        listed,
        page_size,
        server_name,
        next_request: AtomicU64::new(1),
        delegation,
    }));
    let hosts = direct::HostAllowList::new(&settings.allowed_hosts);
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
    let for_rmcp = handler.clone();
    let service = StreamableHttpService::new(
        move || Ok(for_rmcp.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Ok(McpEndpoint {
        service,
        handler,
        hosts,
    })
}

/// The MCP form of a tool spec, or why it has none.
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
    serde_json::from_value(value).map_err(|err| err.to_string())
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
                builtin
                    .call(&self.registry, principal, &args)
                    .map(|value| RawJson::from_value(&value))
            }
        }
    }

    /// One `tools/call`, whichever path it came by: access, delegated
    /// identity, the plugin call on a blocking thread, and the log line.
    async fn call_tool(
        self: &Arc<Self>,
        name: &str,
        credentials: Option<&Credentials>,
        args_json: String,
    ) -> ToolCallReply {
        let principal = credentials.map(|c| c.principal.clone());
        let Some(position) = self.registry.tool_position(name).filter(|&position| {
            self.registry.tools()[position]
                .access
                .allows(principal.as_deref())
        }) else {
            return ToolCallReply::UnknownTool;
        };
        let tool = &self.registry.tools()[position];
        let request_id = format!("req-{}", self.next_request.fetch_add(1, Ordering::Relaxed));
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

    /// Plugins are synchronous and may block on I/O: keep them off the
    /// runtime's worker threads.
    async fn run_blocking(
        self: &Arc<Self>,
        position: usize,
        context: CallContext,
        principal: Option<Arc<Principal>>,
        args_json: String,
    ) -> Result<RawJson, ToolError> {
        let state = self.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let tool = &state.registry.tools()[position];
            state.dispatch(tool, &context, principal.as_deref(), &args_json)
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

/// What a `tools/call` came to, before any protocol encoding.
pub enum ToolCallReply {
    /// Unknown, disabled and hidden tools look the same: a protocol error
    /// (JSON-RPC invalid params), never a tool result.
    UnknownTool,
    /// The tool ran (or was refused before running): a tool result.
    Completed(Result<RawJson, ToolError>),
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
        let args_json = Value::Object(request.arguments.unwrap_or_default()).to_string();
        match self
            .0
            .call_tool(&name, credentials.as_ref(), args_json)
            .await
        {
            ToolCallReply::UnknownTool => Err(McpError::invalid_params(
                format!("Unknown tool: {name}"),
                None,
            )),
            ToolCallReply::Completed(Ok(raw)) if raw.as_str().len() > RMCP_PATH_MAX_RESULT => {
                Ok(error_result(&ToolError::new(
                    codes::RESULT_TOO_LARGE,
                    format!(
                        "this request's form (for example an Origin header, Mcp-Param-* \
                         headers or unknown _meta keys) is served by the general MCP path, \
                         which holds results as trees, so it returns at most {RMCP_PATH_MAX_RESULT} \
                         bytes; this result has {}",
                        raw.as_str().len()
                    ),
                ))
                .into())
            }
            ToolCallReply::Completed(Ok(raw)) => match raw.to_value() {
                Ok(value) => Ok(CallToolResult::structured(value).into()),
                Err(err) => Ok(error_result(&ToolError::new(
                    codes::PLUGIN_PROTOCOL_ERROR,
                    format!("the result cannot be sent on this path: {err}"),
                ))
                .into()),
            },
            ToolCallReply::Completed(Err(error)) => Ok(error_result(&error).into()),
        }
    }
}

impl McpHandler {
    /// The direct path's entry (see [`direct`]): the same call as rmcp's.
    pub async fn call_tool_direct(
        &self,
        name: &str,
        credentials: Option<&Credentials>,
        args_json: String,
    ) -> ToolCallReply {
        self.0.call_tool(name, credentials, args_json).await
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
