//! The MCP protocol layer. This is the only module that knows rmcp: it turns
//! a generation's [`CallCore`] into an rmcp `ServerHandler` served statelessly over
//! Streamable HTTP (any replica can answer any request), for protocol
//! 2026-07-28 (`server/discover`) and the legacy `initialize` flow alike.

use std::sync::Arc;

use base64::Engine as _;
use mcp_delegate_plugin_api::{codes, ToolError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};

use crate::auth::{may_use, Credentials};
use crate::call::{CallCore, RequestTiming, ToolCall, ToolCallReply};
use crate::registry::Route;
use crate::trace::TraceParent;

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
    service: McpService,
    hosts: direct::HostAllowList,
}

impl McpEndpoint {
    /// Serves a request through rmcp.
    pub async fn handle<B>(&self, request: http::Request<B>) -> crate::http::HttpResponse
    where
        B: hyper::body::Body + Send + 'static,
        B::Error: std::fmt::Display,
    {
        self.service.handle(request).await
    }

    /// The plain `tools/call` in `body`, when the direct path may answer it.
    pub fn recognize<'a>(
        &self,
        headers: &http::HeaderMap,
        body: &'a [u8],
    ) -> Option<direct::DirectCall<'a>> {
        direct::recognize(headers, body, &self.hosts)
    }
}

struct McpState {
    core: Arc<CallCore>,
    /// `tools/list` entries, in the registry's (sorted) order, built once.
    listed: Vec<Tool>,
    page_size: usize,
    server_name: String,
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

/// Builds the `/mcp` endpoint of one generation.
pub fn endpoint(
    core: Arc<CallCore>,
    server_name: String,
    page_size: usize,
    settings: EndpointSettings,
) -> Result<McpEndpoint, InvalidToolSpec> {
    let listed = core
        .registry()
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
        core,
        listed,
        page_size,
        server_name,
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
    Ok(McpEndpoint { service, hosts })
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

/// The request's trace parent: `_meta.traceparent` (the 2026-07-28
/// request metadata), else the `traceparent` header; and its timing.
fn trace_of(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> (Option<TraceParent>, RequestTiming) {
    let parts = context.extensions.get::<http::request::Parts>();
    let from_meta = request
        .meta
        .as_ref()
        .and_then(|meta| meta.get_traceparent())
        .or_else(|| context.meta.get_traceparent())
        .and_then(TraceParent::parse);
    let parent =
        from_meta.or_else(|| parts.and_then(|parts| crate::http::trace_parent(&parts.headers)));
    let timing = parts
        .and_then(|parts| parts.extensions.get::<RequestTiming>())
        .copied()
        .unwrap_or_default();
    (parent, timing)
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new(&self.0.server_name, env!("CARGO_PKG_VERSION"));
        info.instructions = Some(self.0.core.registry().instructions.clone());
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
            .core
            .registry()
            .tools()
            .iter()
            .zip(&self.0.listed)
            .filter(|(tool, _)| may_use(tool.access, principal))
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
        let (trace_parent, timing) = trace_of(&request, &context);
        let args_json = Value::Object(request.arguments.unwrap_or_default()).to_string();
        let call = ToolCall {
            name: name.clone(),
            credentials,
            args_json,
            trace_parent,
            timing,
        };
        match self.0.core.call_tool(call).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("not-a-cursor"), None);
    }
}
