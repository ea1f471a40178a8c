//! The `auth` section and a module's `tokenExchange`: typed, with the seed
//! framework's key names.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer tokens from trusted IdPs (the default).
    #[default]
    Oauth,
    /// No authentication: local experiments and protocol test suites only.
    /// The host then binds loopback addresses only and warns loudly.
    None,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    #[serde(default)]
    pub mode: AuthMode,
    #[serde(default, rename = "trustedIDPs")]
    pub trusted_idps: Vec<TrustedIdp>,
}

/// What a trusted IdP entry may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdpUse {
    /// Tokens that log in to `/mcp`.
    Requestor,
    /// Tokens returned by RFC 8693 token exchange.
    TokenExchange,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedIdp {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub jwks_uri: String,
    /// Accepted signature algorithms; asymmetric only.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub claim_mappings: ClaimMappings,
    #[serde(default)]
    pub role_mappings: Option<RoleMappings>,
    #[serde(default)]
    pub security: IdpSecurity,
    /// Default: `["token-exchange"]` when a module's `tokenExchange.idpName`
    /// names this entry, else `["requestor"]`.
    #[serde(default, rename = "use")]
    pub uses: Option<Vec<IdpUse>>,
    /// `azp` (or `client_id`) must be one of these, when set.
    #[serde(default)]
    pub allowed_clients: Option<Vec<String>>,
    /// The seed's single-client form of `allowedClients`.
    #[serde(default)]
    pub client_id: Option<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMappings {
    #[serde(default = "default_user_id_claim")]
    pub user_id: String,
    #[serde(default = "default_username_claim")]
    pub username: String,
    #[serde(default = "default_legacy_claim")]
    pub legacy_username: String,
    #[serde(default = "default_roles_claim")]
    pub roles: String,
    #[serde(default = "default_scopes_claim")]
    pub scopes: String,
}

impl Default for ClaimMappings {
    fn default() -> Self {
        Self {
            user_id: default_user_id_claim(),
            username: default_username_claim(),
            legacy_username: default_legacy_claim(),
            roles: default_roles_claim(),
            scopes: default_scopes_claim(),
        }
    }
}

fn default_user_id_claim() -> String {
    "sub".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_legacy_claim() -> String {
    "legacy_name".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_scopes_claim() -> String {
    "scope".into()
}

/// `{admin: [...], user: [...], guest: [...], <custom>: [...], defaultRole,
/// rejectUnmappedRoles}`: which IdP role names grant which server role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleMappings {
    #[serde(default)]
    pub default_role: Option<String>,
    #[serde(default)]
    pub reject_unmapped_roles: bool,
    #[serde(flatten)]
    pub grants: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdpSecurity {
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_clock_tolerance")]
    pub clock_tolerance: u64,
    /// Refuse tokens issued longer ago than this many seconds (needs `iat`).
    #[serde(default)]
    pub max_token_age: Option<u64>,
    #[serde(default)]
    pub require_nbf: bool,
    /// Least seconds between two JWKS refreshes caused by unknown `kid`s.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_refresh_cooldown_seconds: u64,
    /// Background JWKS refresh period.
    #[serde(default = "default_jwks_interval")]
    pub jwks_refresh_interval_seconds: u64,
}

impl Default for IdpSecurity {
    fn default() -> Self {
        Self {
            clock_tolerance: default_clock_tolerance(),
            max_token_age: None,
            require_nbf: false,
            jwks_refresh_cooldown_seconds: default_jwks_cooldown(),
            jwks_refresh_interval_seconds: default_jwks_interval(),
        }
    }
}

fn default_clock_tolerance() -> u64 {
    30
}
fn default_jwks_cooldown() -> u64 {
    30
}
fn default_jwks_interval() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// A module's RFC 8693 settings. `Debug` leaves the client secret out.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenExchangeConfig {
    /// The trusted IdP whose keys verify the exchanged token.
    pub idp_name: String,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: String,
    pub audience: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    /// Claim of the exchanged token holding the database identity.
    #[serde(default = "default_legacy_claim")]
    pub required_claim: String,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default)]
    pub client_auth_method: ClientAuthMethod,
    #[serde(default)]
    pub cache: ExchangeCacheConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeCacheConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_exchange_ttl")]
    pub ttl_seconds: u64,
    #[serde(default = "default_exchange_entries")]
    pub max_entries: usize,
}

impl Default for ExchangeCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_seconds: default_exchange_ttl(),
            max_entries: default_exchange_entries(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_exchange_ttl() -> u64 {
    60
}
fn default_exchange_entries() -> usize {
    10_000
}

impl std::fmt::Debug for TokenExchangeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchangeConfig")
            .field("idp_name", &self.idp_name)
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("audience", &self.audience)
            .field("client_auth_method", &self.client_auth_method)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_client_secret() {
        let config: TokenExchangeConfig = serde_json::from_value(serde_json::json!({
            "idpName": "te", "tokenEndpoint": "http://idp/token", "clientId": "c",
            "clientSecret": "hunter2", "audience": "db"
        }))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
