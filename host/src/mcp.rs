//! The MCP protocol layer. This is the only module that knows rmcp: it turns
//! the [`Registry`] into an rmcp `ServerHandler` served statelessly over
//! Streamable HTTP (any replica can answer any request), for protocol
//! 2026-07-28 (`server/discover`) and the legacy `initialize` flow alike.

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

impl McpState {
    /// Runs one tool call to completion. Blocking: plugin code runs here.
    fn dispatch(
        &self,
        name: &str,
        context: &CallContext,
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
            Route::Builtin(builtin) => builtin.call(&self.registry, args),
        }
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
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let listed = &self.0.listed;
        let start = match request.and_then(|params| params.cursor) {
            None => 0,
            Some(cursor) => decode_cursor(&cursor)
                .filter(|&offset| offset <= listed.len())
                .ok_or_else(|| McpError::invalid_params("invalid pagination cursor", None))?,
        };
        let end = (start + self.0.page_size).min(listed.len());
        let mut result = ListToolsResult::with_all_items(listed[start..end].to_vec());
        if end < listed.len() {
            result.next_cursor = Some(encode_cursor(end));
        }
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        if self.0.registry.tool(&name).is_none() {
            // Unknown and disabled tools look the same: a protocol error.
            return Err(McpError::invalid_params(
                format!("Unknown tool: {name}"),
                None,
            ));
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        let request_id = format!(
            "req-{}",
            self.0.next_request.fetch_add(1, Ordering::Relaxed)
        );
        let context = CallContext {
            request_id: request_id.clone(),
            ..CallContext::default()
        };
        let started = Instant::now();
        let state = self.0.clone();
        let tool = name.clone();
        // Plugins are synchronous and may block on I/O: keep them off the
        // runtime's worker threads.
        let outcome =
            tokio::task::spawn_blocking(move || state.dispatch(&tool, &context, &args)).await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error),
            Err(join_error) => Err(ToolError::new(
                codes::PLUGIN_PANIC,
                format!(
                    "the tool call failed unexpectedly ({join_error}); the server keeps running"
                ),
            )),
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(match result {
            Ok(value) => {
                tracing::info!(tool = %name, %request_id, elapsed_ms, "tool call ok");
                CallToolResult::structured(value)
            }
            Err(error) => {
                tracing::info!(tool = %name, %request_id, elapsed_ms, code = %error.error, "tool call failed");
                error_result(&error)
            }
        }
        .into())
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
