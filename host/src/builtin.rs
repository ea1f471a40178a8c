//! Tools the host serves itself, without a plugin.

use mcp_delegate_plugin_api::{
    codes, HealthReport, ToolAccess, ToolAnnotations, ToolError, ToolSpec,
};
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::plugins::ModuleSet;
use crate::status::{config_status, Generation, ReloadLog};

/// What `health-check` reports on: the modules of the generation now
/// serving, the generation itself, and the last failed reload.
pub struct HostStatus<'a> {
    pub modules: &'a ModuleSet,
    pub generation: &'a Generation,
    pub reload_log: &'a ReloadLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    HealthCheck,
    UserInfo,
}

pub fn all() -> Vec<Builtin> {
    vec![Builtin::HealthCheck, Builtin::UserInfo]
}

/// Claims `user-info` never returns (`includeClaims`).
const HIDDEN_CLAIMS: &[&str] = &["jti", "azp"];

impl Builtin {
    /// Who may see and call the tool.
    pub fn access(self) -> ToolAccess {
        match self {
            Builtin::HealthCheck => ToolAccess::UserOrAdmin,
            Builtin::UserInfo => ToolAccess::Authenticated,
        }
    }

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
                        "config": {"type": "object"},
                        "timestamp": {"type": "string"}
                    },
                    "required": ["healthy", "modules", "config", "timestamp"]
                })),
                annotations: Some(ToolAnnotations {
                    read_only_hint: Some(true),
                    ..ToolAnnotations::default()
                }),
            },
            Builtin::UserInfo => ToolSpec {
                name: "user-info".into(),
                description: "Who you are to this server: user id, username, role, scopes and the \
                              legacy (database) username."
                    .into(),
                input_schema: json!({
                    "type": "object",
                    "properties": {
                        "includeClaims": {
                            "type": "boolean",
                            "default": false,
                            "description": "Also return the token's claims (without jti and azp)."
                        }
                    }
                }),
                output_schema: Some(json!({
                    "type": "object",
                    "properties": {
                        "userId": {"type": ["string", "null"]},
                        "username": {"type": ["string", "null"]},
                        "role": {"type": ["string", "null"]},
                        "customRoles": {"type": "array", "items": {"type": "string"}},
                        "scopes": {"type": "array", "items": {"type": "string"}},
                        "legacyUsername": {"type": ["string", "null"]},
                        "claims": {"type": "object"}
                    },
                    "required": ["userId", "role", "customRoles", "scopes"]
                })),
                annotations: Some(ToolAnnotations {
                    read_only_hint: Some(true),
                    ..ToolAnnotations::default()
                }),
            },
        }
    }

    /// Runs the tool. Blocking (module health probes do I/O).
    pub fn call(
        self,
        status: &HostStatus<'_>,
        principal: Option<&Principal>,
        args: &Value,
    ) -> Result<Value, ToolError> {
        match self {
            Builtin::HealthCheck => health_check(status, args),
            Builtin::UserInfo => user_info(principal, args),
        }
    }
}

fn user_info(principal: Option<&Principal>, args: &Value) -> Result<Value, ToolError> {
    let include_claims = match args.get("includeClaims") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => {
            return Err(ToolError::new(
                codes::INVALID_ARGUMENTS,
                "'includeClaims' must be a boolean",
            ))
        }
    };
    let Some(principal) = principal else {
        // auth.mode "none": nobody is authenticated.
        return Ok(json!({
            "userId": null, "username": null, "role": null, "customRoles": [],
            "scopes": [], "legacyUsername": null, "authenticated": false
        }));
    };
    let mut info = json!({
        "userId": principal.user_id,
        "username": principal.username,
        "role": principal.role,
        "customRoles": principal.custom_roles,
        "scopes": principal.scopes,
        "legacyUsername": principal.legacy_username,
    });
    if include_claims {
        let claims: Map<String, Value> = principal
            .claims()
            .into_iter()
            .filter(|(name, _)| !HIDDEN_CLAIMS.contains(&name.as_str()))
            .collect();
        info["claims"] = Value::Object(claims);
    }
    Ok(info)
}

fn health_check(status: &HostStatus<'_>, args: &Value) -> Result<Value, ToolError> {
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
    for module in status.modules.running.iter().filter(|m| wanted(&m.name)) {
        let mut report = report_json(&module.health());
        let limits = module.bulkhead.limits();
        report["calls"] = json!({
            "inProgress": module.bulkhead.in_progress(),
            "running": module.bulkhead.running(),
            "maxConcurrentCalls": limits.concurrent,
            "queuedCalls": limits.queued,
            "queueTimeoutMillis": u64::try_from(limits.queue_wait.as_millis()).unwrap_or(u64::MAX),
        });
        modules.insert(module.name.clone(), report);
    }
    for missing in status
        .modules
        .unavailable
        .iter()
        .filter(|m| wanted(&m.name))
    {
        let report = HealthReport {
            healthy: false,
            detail: missing.reason.clone(),
            ..HealthReport::default()
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
        "config": config_status(status.generation, status.reload_log),
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    }))
}

fn report_json(report: &HealthReport) -> Value {
    let mut json = json!({"healthy": report.healthy, "detail": report.detail});
    for (key, value) in &report.status {
        json[key] = value.clone();
    }
    json
}
