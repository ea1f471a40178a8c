//! The minimal delegation module, and the template for module authors.
//!
//! Module kind `echo`: every `delegation.modules` entry named `echo`,
//! `echo1`, … (or with `"type": "echo"`) gets an instance serving one tool,
//! `<prefix>-echo`, which returns its arguments and the caller's context.
//! The `panic` argument makes the call panic on purpose: the host's tests use
//! it to prove that a plugin panic becomes an error result. The entry key
//! `inputSchema` replaces the tool's input schema *unchecked*, so that the
//! host's tests can make a plugin declare an invalid tool.

use mcp_delegate_plugin_api::{
    codes, export_module, CallContext, ConfigIssue, ConfigReport, HealthReport, Module,
    ModuleFactory, ModuleInfo, ToolAccess, ToolAnnotations, ToolError, ToolSpec,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};

/// Which build of the library answers (`"build"` in every result): the
/// host's reload tests rebuild the plugin with another value to upgrade it
/// under a running server.
const BUILD_MARK: &str = match option_env!("MCP_DELEGATE_ECHO_BUILD") {
    Some(mark) => mark,
    None => "echo-build-1",
};

/// Keys an `echo` module entry understands (besides the host's own keys).
const KNOWN_KEYS: &[&str] = &["greeting", "inputSchema"];

pub struct EchoFactory;

pub struct EchoModule {
    /// Set by `shutdown`: later calls fail, so the host's tests see any
    /// call that reaches an instance after the host shut it down.
    shut_down: AtomicBool,
    instance_name: String,
    greeting: String,
    input_schema: Option<Value>,
}

impl EchoModule {
    fn refuse_if_shut_down(&self) -> Result<(), ToolError> {
        if self.shut_down.load(Ordering::SeqCst) {
            return Err(ToolError::new(
                codes::MODULE_UNAVAILABLE,
                format!("echo instance '{}' was shut down", self.instance_name),
            ));
        }
        Ok(())
    }
}

impl ModuleFactory for EchoFactory {
    type Instance = EchoModule;

    fn info() -> ModuleInfo {
        ModuleInfo {
            kind: "echo".into(),
            default_tool_prefix: "echo".into(),
            display_name: "Echo".into(),
            tool_family: "echo".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            tool_access: ToolAccess::UserOrAdmin,
            instructions: Some("{prefix}-echo returns its arguments and your call context.".into()),
        }
    }

    fn validate_config(config: &Value) -> ConfigReport {
        let mut report = ConfigReport::default();
        let Some(entries) = config.as_object() else {
            report.errors.push(ConfigIssue {
                path: String::new(),
                message: "expected an object".into(),
            });
            return report;
        };
        for (key, value) in entries {
            if key == "greeting" && !value.is_string() {
                report.errors.push(ConfigIssue {
                    path: key.clone(),
                    message: "expected a string".into(),
                });
            } else if !KNOWN_KEYS.contains(&key.as_str()) {
                report.warnings.push(ConfigIssue {
                    path: key.clone(),
                    message: "unknown key (ignored)".into(),
                });
            }
        }
        report
    }

    fn new_instance(instance_name: &str, config: Value) -> Result<EchoModule, String> {
        let greeting = config
            .get("greeting")
            .and_then(Value::as_str)
            .unwrap_or("echo")
            .to_owned();
        tracing::info!(instance = instance_name, "echo module ready");
        Ok(EchoModule {
            shut_down: AtomicBool::new(false),
            instance_name: instance_name.to_owned(),
            greeting,
            input_schema: config.get("inputSchema").cloned(),
        })
    }
}

impl Module for EchoModule {
    fn tools(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "echo".into(),
            description: "Returns its arguments and the caller's identity.".into(),
            input_schema: self.input_schema.clone().unwrap_or_else(|| {
                json!({
                    "type": "object",
                    "properties": {
                        "message": {"type": "string", "description": "Text to echo back."},
                        "panic": {"type": "boolean", "description": "Panic on purpose (tests)."},
                        "delayMillis": {"type": "integer", "minimum": 0, "maximum": 10000,
                                        "description": "Answer this much later (tests)."}
                    },
                    "required": ["message"]
                })
            }),
            output_schema: Some(json!({
                "type": "object",
                "properties": {
                    "instance": {"type": "string"},
                    "greeting": {"type": "string"},
                    "message": {"type": "string"},
                    "context": {"type": "object"}
                },
                "required": ["instance", "greeting", "message", "context"]
            })),
            annotations: Some(ToolAnnotations {
                read_only_hint: Some(true),
                ..ToolAnnotations::default()
            }),
        }]
    }

    fn call(&self, tool: &str, context: &CallContext, args: Value) -> Result<Value, ToolError> {
        if tool != "echo" {
            return Err(ToolError::new(
                codes::UNKNOWN_TOOL,
                format!("unknown tool '{tool}'"),
            ));
        }
        if args.get("panic").and_then(Value::as_bool) == Some(true) {
            panic!("echo was asked to panic");
        }
        let message = args.get("message").and_then(Value::as_str).ok_or_else(|| {
            ToolError::new(codes::INVALID_ARGUMENTS, "'message' must be a string")
        })?;
        self.refuse_if_shut_down()?;
        // `delayMillis` (at most 10 s): a slow call, for tests of what
        // happens to calls in flight.
        if let Some(delay) = args.get("delayMillis").and_then(Value::as_u64) {
            std::thread::sleep(std::time::Duration::from_millis(delay.min(10_000)));
            self.refuse_if_shut_down()?;
        }
        tracing::debug!(instance = %self.instance_name, request_id = %context.request_id, "echo");
        Ok(json!({
            "instance": self.instance_name,
            "greeting": self.greeting,
            "message": message,
            "build": BUILD_MARK,
            "context": context,
        }))
    }

    fn shutdown(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        tracing::info!(instance = %self.instance_name, "echo module shut down");
    }

    fn health(&self) -> HealthReport {
        HealthReport {
            healthy: true,
            detail: "echo has nothing to check".into(),
            ..HealthReport::default()
        }
    }
}

export_module!(EchoFactory);
