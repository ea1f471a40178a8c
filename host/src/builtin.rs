//! Tools the host serves itself, without a plugin.

use mcp_delegate_plugin_api::{codes, HealthReport, ToolAnnotations, ToolError, ToolSpec};
use serde_json::{json, Map, Value};

use crate::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    HealthCheck,
}

pub fn all() -> Vec<Builtin> {
    vec![Builtin::HealthCheck]
}

impl Builtin {
    pub fn spec(self) -> ToolSpec {
        match self {
            Builtin::HealthCheck => ToolSpec {
                name: "health-check".into(),
                description:
                    "Reports whether each delegation module (and its database) is healthy.".into(),
                input_schema: json!({
                    "type": "object",
                    "properties": {
                        "service": {
                            "type": "string",
                            "description": "'all' (default) or one module name, e.g. 'postgresql1'."
                        }
                    }
                }),
                output_schema: Some(json!({
                    "type": "object",
                    "properties": {
                        "healthy": {"type": "boolean"},
                        "modules": {"type": "object"},
                        "timestamp": {"type": "string"}
                    },
                    "required": ["healthy", "modules", "timestamp"]
                })),
                annotations: Some(ToolAnnotations {
                    read_only_hint: Some(true),
                    ..ToolAnnotations::default()
                }),
            },
        }
    }

    /// Runs the tool. Blocking (module health probes do I/O).
    pub fn call(self, registry: &Registry, args: &Value) -> Result<Value, ToolError> {
        match self {
            Builtin::HealthCheck => health_check(registry, args),
        }
    }
}

fn health_check(registry: &Registry, args: &Value) -> Result<Value, ToolError> {
    let service = match args.get("service") {
        None | Some(Value::Null) => "all",
        Some(Value::String(service)) => service.as_str(),
        Some(_) => {
            return Err(ToolError::new(
                codes::INVALID_ARGUMENTS,
                "'service' must be a string",
            ))
        }
    };
    let mut modules = Map::new();
    let wanted = |name: &str| service == "all" || service == name;
    for module in registry.modules.iter().filter(|m| wanted(&m.name)) {
        modules.insert(module.name.clone(), report_json(&module.health()));
    }
    for missing in registry.unavailable.iter().filter(|m| wanted(&m.name)) {
        let report = HealthReport {
            healthy: false,
            detail: missing.reason.clone(),
        };
        modules.insert(missing.name.clone(), report_json(&report));
    }
    if service != "all" && modules.is_empty() {
        return Err(ToolError::new(
            codes::MODULE_UNAVAILABLE,
            format!("no module named '{service}'"),
        ));
    }
    let healthy = modules
        .values()
        .all(|report| report["healthy"].as_bool() == Some(true));
    Ok(json!({
        "healthy": healthy,
        "modules": modules,
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    }))
}

fn report_json(report: &HealthReport) -> Value {
    json!({"healthy": report.healthy, "detail": report.detail})
}
