//! RFC 9728 Protected Resource Metadata and the `WWW-Authenticate`
//! challenges that point clients to it.

use serde_json::{json, Value};

use super::{AuthFailure, TokenRejection};

/// Where this server is, as clients see it.
#[derive(Debug, Clone)]
pub struct ResourceIdentity {
    /// Public base URL without a trailing slash.
    pub base_url: String,
    /// `mcp.oauth.scopes`.
    pub scopes: Vec<String>,
}

impl ResourceIdentity {
    pub fn new(base_url: &str, scopes: Vec<String>) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            scopes,
        }
    }

    /// The canonical URL of the MCP endpoint.
    pub fn resource(&self) -> String {
        format!("{}/mcp", self.base_url)
    }

    pub fn metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base_url)
    }

    pub fn metadata(&self, authorization_servers: &[String]) -> Value {
        json!({
            "resource": self.resource(),
            "authorization_servers": authorization_servers,
            "scopes_supported": self.scopes,
            "bearer_methods_supported": ["header"],
        })
    }

    /// The challenge for a refused request.
    pub fn challenge(&self, failure: &AuthFailure) -> String {
        let mut parts = vec![format!("resource_metadata=\"{}\"", self.metadata_url())];
        match failure {
            // RFC 6750 §3.1: no error code when no credentials were sent.
            AuthFailure::Missing => {}
            AuthFailure::Invalid(rejection) => {
                parts.push("error=\"invalid_token\"".into());
                parts.push(format!(
                    "error_description=\"{}\"",
                    quote_safe(&rejection.to_string())
                ));
            }
            AuthFailure::UnmappedRoles => {
                parts.push("error=\"insufficient_scope\"".into());
                parts.push(
                    "error_description=\"no role of this user is allowed to use this server\""
                        .into(),
                );
            }
            AuthFailure::InsufficientScope(missing) => {
                parts.push("error=\"insufficient_scope\"".into());
                parts.push(format!("scope=\"{}\"", missing.join(" ")));
                return format!("Bearer {}", parts.join(", "));
            }
            // Not the token's fault: no error code for it to act on.
            AuthFailure::Unavailable(_) => {}
        }
        if !self.scopes.is_empty() {
            parts.push(format!("scope=\"{}\"", self.scopes.join(" ")));
        }
        format!("Bearer {}", parts.join(", "))
    }
}

fn quote_safe(text: &str) -> String {
    text.chars().filter(|c| *c != '"' && *c != '\\').collect()
}

impl AuthFailure {
    pub fn status(&self) -> u16 {
        match self {
            AuthFailure::Missing | AuthFailure::Invalid(_) => 401,
            AuthFailure::UnmappedRoles | AuthFailure::InsufficientScope(_) => 403,
            AuthFailure::Unavailable(_) => 503,
        }
    }

    /// Stable code and a short description for the JSON body.
    pub fn body(&self) -> Value {
        let (error, description) = match self {
            AuthFailure::Missing => ("invalid_token", "a bearer token is required".to_owned()),
            AuthFailure::Invalid(rejection) => ("invalid_token", rejection.to_string()),
            AuthFailure::UnmappedRoles => (
                "insufficient_scope",
                "no role of this user is allowed to use this server".to_owned(),
            ),
            AuthFailure::InsufficientScope(missing) => (
                "insufficient_scope",
                format!("the token lacks the scope(s): {}", missing.join(" ")),
            ),
            AuthFailure::Unavailable(rejection) => {
                ("temporarily_unavailable", rejection.to_string())
            }
        };
        json!({"error": error, "error_description": description})
    }
}

impl From<TokenRejection> for AuthFailure {
    fn from(rejection: TokenRejection) -> Self {
        match rejection {
            TokenRejection::KeysUnavailable => AuthFailure::Unavailable(rejection),
            rejection => AuthFailure::Invalid(rejection),
        }
    }
}
