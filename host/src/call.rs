//! The one place every `tools/call` passes, whichever MCP path it came
//! by (rmcp's handler or the direct path): tool lookup and access, the
//! caller's delegated identity, the plugin call on a blocking thread, and
//! the log line. Metrics and audit hook in here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mcp_delegate_plugin_api::{codes, CallContext, CallFacts, ToolError};
use serde_json::{json, Value};

use crate::audit::{self, AuditLog, AuditRecord};
use crate::auth::exchange::TokenExchanger;
use crate::auth::{may_use, Credentials, Principal};
use crate::builtin::HostStatus;
use crate::json::RawJson;
use crate::metrics::METRICS;
use crate::registry::{ExposedTool, Registry, Route};
use crate::status::{Generation, ReloadLog};
use crate::trace::{CallTrace, Step, TraceParent};

/// Request ids stay unique across reloads, and carry a per-process
/// prefix so that replicas and restarts do not repeat them.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

static REQUEST_PREFIX: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let seed = format!(
        "{}:{:?}",
        std::process::id(),
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)
    );
    crate::config::sha256_hex(seed.as_bytes())[..8].to_owned()
});

/// The calls of one generation: its tools, and how its module calls get
/// their database identities.
pub struct CallCore {
    registry: Arc<Registry>,
    /// Per module name, when the module has `tokenExchange`.
    exchangers: HashMap<String, Arc<TokenExchanger>>,
    generation: Generation,
    reload_log: Arc<ReloadLog>,
    audit: Option<Arc<AuditLog>>,
}

/// One `tools/call` as it arrived.
pub struct ToolCall {
    pub name: String,
    pub credentials: Option<Credentials>,
    pub args_json: String,
    /// The caller's `traceparent`, when well formed.
    pub trace_parent: Option<TraceParent>,
    /// When the request arrived, and how long authenticating it took.
    pub timing: RequestTiming,
}

/// When a request arrived and was authenticated (for its trace).
#[derive(Debug, Clone, Copy)]
pub struct RequestTiming {
    pub received: SystemTime,
    pub authenticated: Option<(SystemTime, SystemTime)>,
}

impl Default for RequestTiming {
    fn default() -> Self {
        Self {
            received: SystemTime::now(),
            authenticated: None,
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

impl CallCore {
    pub fn new(
        registry: Arc<Registry>,
        exchangers: HashMap<String, Arc<TokenExchanger>>,
        generation: Generation,
        reload_log: Arc<ReloadLog>,
        audit: Option<Arc<AuditLog>>,
    ) -> Self {
        Self {
            registry,
            exchangers,
            generation,
            reload_log,
            audit,
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
    /// blocking thread, the log line and the audit line. It runs as a task
    /// of its own: a client that disconnects drops the request's future,
    /// and must not thereby skip the audit line of a call that ran.
    pub async fn call_tool(self: &Arc<Self>, call: ToolCall) -> ToolCallReply {
        let core = self.clone();
        match tokio::spawn(async move { core.run_call(call).await }).await {
            Ok(reply) => reply,
            Err(join_error) => ToolCallReply::Completed(Err(ToolError::new(
                codes::PLUGIN_PANIC,
                format!(
                    "the tool call failed unexpectedly ({join_error}); the server keeps running"
                ),
            ))),
        }
    }

    async fn run_call(self: &Arc<Self>, call: ToolCall) -> ToolCallReply {
        let ToolCall {
            name,
            credentials,
            args_json,
            trace_parent,
            timing,
        } = call;
        let name = name.as_str();
        let credentials = credentials.as_ref();
        let principal = credentials.map(|c| c.principal.clone());
        let request_id = format!(
            "req-{}-{}",
            *REQUEST_PREFIX,
            NEXT_REQUEST.fetch_add(1, Ordering::Relaxed)
        );
        let known = self.registry.tool_position(name).filter(|&position| {
            may_use(self.registry.tools()[position].access, principal.as_deref())
        });
        // A name the registry does not know is the client's text: it never
        // becomes a span attribute, and the audit line keeps its start.
        let label = if known.is_some() { name } else { "unknown" };
        let trace = CallTrace::start(label, trace_parent.as_ref(), timing.received);
        if let (Some(trace), Some((start, end))) = (&trace, timing.authenticated) {
            trace.step(
                Step {
                    name: "authenticate",
                    start,
                    end,
                },
                &[],
            );
        }
        let trace_id = trace
            .as_ref()
            .map(|trace| trace.trace_id.clone())
            .or_else(|| trace_parent.map(|parent| parent.trace_id));
        let mut record = AuditRecord {
            event: "tool-call",
            request_id: Some(&request_id),
            trace_id: trace_id.as_deref(),
            tool: Some(if known.is_some() {
                name
            } else {
                prefix_of(name, MAX_UNKNOWN_TOOL_CHARS)
            }),
            ..AuditRecord::default()
        };
        if let Some(principal) = &principal {
            record.subject = Some(&principal.user_id);
            record.username = principal.username.as_deref();
            record.idp = Some(&principal.idp);
            record.client = principal.client.as_deref();
            record.server_role = Some(&principal.role);
        }
        let Some(position) = self.registry.tool_position(name).filter(|&position| {
            may_use(self.registry.tools()[position].access, principal.as_deref())
        }) else {
            record.outcome = "unknown-tool";
            self.audit(&mut record);
            METRICS.unknown_tool();
            if let Some(trace) = trace {
                trace.finish(None, Some("unknown-tool"), SystemTime::now());
            }
            return ToolCallReply::UnknownTool;
        };
        let tool = &self.registry.tools()[position];
        let started = Instant::now();
        let module = match &tool.route {
            Route::Module { module, .. } => Some(module.name.as_str()),
            Route::Builtin(_) => None,
        };
        record.module = module;
        let identity_started = SystemTime::now();
        let call_context = match module {
            Some(module) => {
                self.module_context(module, credentials, request_id.clone())
                    .await
            }
            None => Ok(match &principal {
                Some(principal) => principal_context(principal, request_id.clone()),
                None => CallContext {
                    request_id: request_id.clone(),
                    ..CallContext::default()
                },
            }),
        }
        .map(|context| CallContext {
            tool: Some(name.to_owned()),
            trace_id: trace_id.clone(),
            want_facts: self.audit.is_some()
                || crate::metrics::enabled()
                || crate::trace::enabled(),
            ..context
        });
        if let (Some(trace), Some(_)) = (&trace, module) {
            trace.step(
                Step {
                    name: "delegated identity",
                    start: identity_started,
                    end: SystemTime::now(),
                },
                &[],
            );
        }
        let database_role = call_context
            .as_ref()
            .ok()
            .and_then(|context| context.delegated_identity.clone());
        record.database_role = database_role.as_deref();
        let (result, facts) = match call_context {
            Ok(call_context) => {
                if let Some(refused) = self.audit_before(&record) {
                    (Err(refused), None)
                } else {
                    let plugin_started = SystemTime::now();
                    let outcome = self
                        .run_blocking(position, call_context, principal.clone(), args_json)
                        .await;
                    if let Some(trace) = &trace {
                        trace_plugin_call(trace, plugin_started, outcome.1.as_ref());
                    }
                    outcome
                }
            }
            Err(error) => (Err(error), None),
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
        record.duration_ms = Some(elapsed_ms);
        let sqlstate = result
            .as_ref()
            .err()
            .and_then(|error| error.details.get("sqlstate"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        record.sqlstate = sqlstate.as_deref();
        METRICS.tool_call(
            module.unwrap_or(""),
            name,
            result.as_ref().err().map(|error| error.error.as_str()),
            record.sqlstate,
            facts.as_ref(),
            started.elapsed(),
        );
        let result = self.audit_after(&record, facts.as_ref(), result);
        if let Some(trace) = trace {
            let code = result.as_ref().err().map(|error| error.error.as_str());
            trace.finish(module, code, SystemTime::now());
        }
        ToolCallReply::Completed(result)
    }

    /// The audit line of a request refused before any tool was looked up
    /// (authentication or authorization at the HTTP layer).
    pub fn audit_refused_request(&self, status: u16, reason: &str, trace_id: Option<&str>) {
        let mut record = AuditRecord {
            event: "request-refused",
            outcome: "refused",
            http_status: Some(status),
            reason: Some(reason),
            trace_id,
            ..AuditRecord::default()
        };
        self.audit(&mut record);
    }

    /// Writes `record` when there is an audit log (fail-open: a failure
    /// is logged and the call goes on).
    fn audit(&self, record: &mut AuditRecord<'_>) {
        if let Some(audit) = &self.audit {
            record.time = audit::now();
            let _ = audit.write(record);
        }
    }

    /// Fail-closed mode: the `call-start` line, before anything runs; its
    /// failure refuses the call.
    fn audit_before(&self, record: &AuditRecord<'_>) -> Option<ToolError> {
        let audit = self.audit.as_ref().filter(|audit| audit.fails_closed())?;
        let start = AuditRecord {
            time: audit::now(),
            event: "call-start",
            outcome: "started",
            ..record.clone()
        };
        audit.write(&start).err().map(|err| {
            ToolError::new(
                codes::AUDIT_UNAVAILABLE,
                format!("{err}; nothing ran (audit.failMode is \"closed\")"),
            )
        })
    }

    /// The call's audit line, with what the module reported. Fail-closed
    /// mode withholds the result of a call whose line cannot be written.
    fn audit_after(
        &self,
        record: &AuditRecord<'_>,
        facts: Option<&CallFacts>,
        result: Result<RawJson, ToolError>,
    ) -> Result<RawJson, ToolError> {
        let Some(audit) = &self.audit else {
            return result;
        };
        let error_code = result.as_ref().err().map(|error| error.error.clone());
        let mut record: AuditRecord<'_> = record.clone();
        if let Some(facts) = facts {
            record.statement_class = facts.statement_class.as_deref();
            record.statement_kind = facts.statement_kind.as_deref();
            record.fingerprint = facts.fingerprint.as_deref();
            record.normalized = facts.normalized.as_deref();
            record.rows = facts.rows;
            record.truncated = facts.truncated;
            record.refusal_reason = facts.refusal_reason.as_deref();
        }
        record.outcome = if error_code.is_some() { "error" } else { "ok" };
        record.error_code = error_code.as_deref();
        record.time = audit::now();
        match audit.write(&record) {
            Err(err) if audit.fails_closed() => Err(ToolError::new(
                codes::AUDIT_UNAVAILABLE,
                format!(
                    "{err}; the call ran but its result is withheld (audit.failMode is \"closed\")"
                ),
            )
            .with("ran", true)),
            _ => result,
        }
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
        let entry = self.registry.entries.get(module);
        if let Some(entry) = entry {
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
        let claims = entry
            .filter(|entry| entry.claims_setting)
            .map(|_| principal.claims_json.to_string());
        Ok(CallContext {
            delegated_identity: Some(identity),
            delegated_roles: roles,
            claims,
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
    ) -> (Result<RawJson, ToolError>, Option<CallFacts>) {
        match &tool.route {
            Route::Module { module, tool } => module.call(tool, context, args_json),
            Route::Builtin(builtin) => {
                let args: Value = match serde_json::from_str(args_json) {
                    Ok(args) => args,
                    Err(err) => {
                        let error = ToolError::new(
                            codes::INVALID_ARGUMENTS,
                            format!("the arguments are not JSON: {err}"),
                        );
                        return (Err(error), None);
                    }
                };
                let status = HostStatus {
                    modules: &self.registry.modules,
                    generation: &self.generation,
                    reload_log: &self.reload_log,
                };
                let result = builtin
                    .call(&status, principal, &args)
                    .map(|value| RawJson::from_value(&value));
                (result, None)
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
    ) -> (Result<RawJson, ToolError>, Option<CallFacts>) {
        // The module's bulkhead: a place is taken (perhaps after a wait in
        // its queue) before a blocking thread is, and held until the
        // plugin returns.
        let place = match &self.registry.tools()[position].route {
            Route::Module { module, .. } => match module.bulkhead.enter(&module.name).await {
                Ok(place) => Some(place),
                Err(busy) => return (Err(busy), None),
            },
            Route::Builtin(_) => None,
        };
        let core = self.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let tool = &core.registry.tools()[position];
            let outcome = core.dispatch(tool, &context, principal.as_deref(), &args_json);
            drop(place);
            outcome
        })
        .await;
        match outcome {
            Ok(outcome) => outcome,
            Err(join_error) => {
                let error = ToolError::new(
                    codes::PLUGIN_PANIC,
                    format!(
                        "the tool call failed unexpectedly ({join_error}); the server keeps running"
                    ),
                );
                (Err(error), None)
            }
        }
    }
}

/// The plugin call's span, and the database batch under it when the
/// module timed one.
fn trace_plugin_call(trace: &CallTrace, started: SystemTime, facts: Option<&CallFacts>) {
    let batch = facts.and_then(|facts| {
        let after = Duration::from_micros(facts.database_after_micros?);
        let took = Duration::from_micros(facts.database_micros?);
        Some(Step {
            name: "database batch",
            start: started + after,
            end: started + after + took,
        })
    });
    let step = Step {
        name: "plugin call",
        start: started,
        end: SystemTime::now(),
    };
    trace.step(step, batch.as_slice());
}

/// How much of an unknown tool's name the audit line keeps.
const MAX_UNKNOWN_TOOL_CHARS: usize = 128;

/// The first `max` characters of `text`.
fn prefix_of(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(cut, _)| &text[..cut])
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
        client: principal.client.clone(),
        tool: None,
        claims: None,
        trace_id: None,
        want_facts: false,
    }
}
