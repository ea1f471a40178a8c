//! The OAuth 2.1 resource server: who is calling ([`Authenticator`]), and as
//! whom they reach each database ([`exchange`]). Only the host knows tokens;
//! plugins receive the resulting identities in their call context.

mod cache;
mod claims;
pub mod exchange;
mod jwks;
pub mod resource;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_delegate_plugin_api::ToolAccess;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::auth::{AuthConfig, AuthMode};
use crate::config::{IdpUse, ModuleEntry};
pub use verify::TokenRejection;
use verify::{unverified_issuer_and_audience, IdpRuntime};

/// Verified-token cache size (entries). An entry holds the caller's
/// principal and the token's claims as one JSON string (about 1 KiB), so
/// this bounds the cache near 10 MiB.
const VERIFIED_TOKEN_CACHE_ENTRIES: usize = 10_000;

/// An authenticated caller, from a verified requestor token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub idp: String,
    pub user_id: String,
    pub username: Option<String>,
    pub legacy_username: Option<String>,
    /// The claim `legacy_username` comes from (for error messages).
    pub legacy_username_claim: String,
    /// `admin`, `user` or `guest`.
    pub role: String,
    pub custom_roles: Vec<String>,
    /// Roles for the SQL policy when no token exchange applies.
    pub delegated_roles: Vec<String>,
    pub scopes: Vec<String>,
    /// The OAuth client (`azp`, else `client_id`).
    pub client: Option<String>,
    /// Every claim of the token, as compact JSON text: only `user-info`
    /// reads them, and one string per cached token is far smaller than a
    /// map of values (see `VERIFIED_TOKEN_CACHE_ENTRIES`).
    pub claims_json: Box<str>,
}

/// Whether `principal` may see and call a tool with `access` (the seed's
/// rules: `user` or `admin` for module tools). `None` principal:
/// authentication is off (`auth.mode: "none"`).
pub fn may_use(access: ToolAccess, principal: Option<&Principal>) -> bool {
    match (access, principal) {
        (_, None) | (ToolAccess::Authenticated, Some(_)) => true,
        (ToolAccess::UserOrAdmin, Some(principal)) => principal.has_role(&["user", "admin"]),
    }
}

impl Principal {
    pub fn has_role(&self, roles: &[&str]) -> bool {
        roles.contains(&self.role.as_str())
    }

    /// The token's claims.
    pub fn claims(&self) -> Map<String, Value> {
        serde_json::from_str(&self.claims_json).unwrap_or_default()
    }
}

/// What the HTTP layer attaches to an authenticated `/mcp` request.
#[derive(Clone)]
pub struct Credentials {
    pub principal: Arc<Principal>,
    /// The bearer token, kept only for this request (token exchange).
    pub token: Arc<str>,
    /// SHA-256 of the token: cache key that never stores the token itself.
    pub token_hash: [u8; 32],
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No bearer token at all.
    Missing,
    /// A token that is not acceptable (401 `invalid_token`).
    Invalid(TokenRejection),
    /// Authenticated, but the token's roles map to nothing (403).
    UnmappedRoles,
    /// Authenticated, but a required scope is missing (403 `insufficient_scope`).
    InsufficientScope(Vec<String>),
    /// The token cannot be checked now: its IdP's keys cannot be fetched
    /// (503 `temporarily_unavailable`).
    Unavailable(TokenRejection),
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub struct Authenticator {
    idps: Vec<Arc<IdpRuntime>>,
    required_scopes: Vec<String>,
    verified: cache::TtlCache<[u8; 32], Arc<Principal>>,
}

impl Authenticator {
    /// Builds the runtime IdPs. `use` defaults: an IdP named by a module's
    /// `tokenExchange.idpName` is for token exchange only; the others are
    /// for requestors.
    pub fn new<'a>(
        config: &AuthConfig,
        modules: impl Iterator<Item = &'a ModuleEntry>,
        required_scopes: Vec<String>,
        http: reqwest::Client,
    ) -> Option<Arc<Self>> {
        if config.mode == AuthMode::None {
            return None;
        }
        let exchange_idps: Vec<String> = modules
            .filter_map(|entry| entry.token_exchange.as_ref())
            .map(|exchange| exchange.idp_name.clone())
            .collect();
        let idps = config
            .trusted_idps
            .iter()
            .map(|idp| {
                let uses = idp.uses.clone().unwrap_or_else(|| {
                    if exchange_idps.contains(&idp.name) {
                        vec![IdpUse::TokenExchange]
                    } else {
                        vec![IdpUse::Requestor]
                    }
                });
                Arc::new(IdpRuntime::new(idp.clone(), uses, http.clone()))
            })
            .collect();
        Some(Arc::new(Self {
            idps,
            required_scopes,
            verified: cache::TtlCache::new("verified", VERIFIED_TOKEN_CACHE_ENTRIES),
        }))
    }

    /// Starts the background JWKS refreshers (first fetch right away).
    pub fn spawn_key_refresh(&self) {
        for idp in &self.idps {
            let interval =
                Duration::from_secs(idp.config.security.jwks_refresh_interval_seconds.max(1));
            tokio::spawn(jwks::refresh_periodically(
                Arc::downgrade(&idp.jwks),
                interval,
            ));
        }
    }

    /// Fetches every IdP's key set once, now: a reload does this before
    /// its new authenticator serves, so the first requests after the swap
    /// do not wait for keys. Failures are logged; keys are then fetched on
    /// demand as usual.
    pub async fn fetch_keys_now(&self) {
        for idp in &self.idps {
            if let Err(err) = idp.jwks.fetch().await {
                tracing::warn!(idp = %idp.config.name, error = %err, "JWKS fetch before the swap failed");
            }
        }
    }

    /// Distinct issuers of the requestor IdPs (for the PRM document).
    pub fn requestor_issuers(&self) -> Vec<String> {
        let mut issuers: Vec<String> = self
            .idps
            .iter()
            .filter(|idp| idp.serves(IdpUse::Requestor))
            .map(|idp| idp.config.issuer.clone())
            .collect();
        issuers.dedup();
        issuers
    }

    pub(crate) fn idp(&self, name: &str) -> Option<&Arc<IdpRuntime>> {
        self.idps.iter().find(|idp| idp.config.name == name)
    }

    /// Authenticates a bearer token. Verified tokens are cached by hash
    /// until they expire, so repeated calls skip signature verification.
    pub async fn authenticate(&self, token: &str) -> Result<Credentials, AuthFailure> {
        let hash = token_hash(token);
        let principal = match self.verified.get(&hash) {
            Some(principal) => principal,
            None => {
                let (principal, expires_in) = self.verify_requestor(token).await?;
                let principal = Arc::new(principal);
                self.verified
                    .insert(hash, principal.clone(), Instant::now() + expires_in);
                principal
            }
        };
        let missing: Vec<String> = self
            .required_scopes
            .iter()
            .filter(|scope| !principal.scopes.contains(scope))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(AuthFailure::InsufficientScope(missing));
        }
        Ok(Credentials {
            principal,
            token: Arc::from(token),
            token_hash: hash,
        })
    }

    async fn verify_requestor(&self, token: &str) -> Result<(Principal, Duration), AuthFailure> {
        let (iss, aud) = unverified_issuer_and_audience(token)
            .ok_or(AuthFailure::Invalid(TokenRejection::Malformed))?;
        // Only `requestor` IdPs log users in: a token minted for a database
        // audience can never be used against /mcp.
        let idp = self
            .idps
            .iter()
            .find(|idp| idp.serves(IdpUse::Requestor) && idp.matches(iss.as_deref(), &aud))
            .ok_or(AuthFailure::Invalid(TokenRejection::NotTrusted))?;
        let claims = idp.verify(token).await.map_err(AuthFailure::from)?;
        let mappings = &idp.config.claim_mappings;
        let raw_roles = claims::list_claim(&claims, &mappings.roles);
        let roles = claims::map_roles(&raw_roles, idp.config.role_mappings.as_ref())
            .ok_or(AuthFailure::UnmappedRoles)?;
        let delegated_roles = if idp.config.role_mappings.is_some() {
            std::iter::once(roles.primary.clone())
                .chain(roles.custom.iter().cloned())
                .collect()
        } else {
            raw_roles
        };
        // Cached no longer than the token is valid: its `exp`, or its age
        // limit (`maxTokenAge` after `iat`), whichever comes first.
        let mut expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if let (Some(max_age), Some(iat)) = (
            idp.config.security.max_token_age,
            claims.get("iat").and_then(Value::as_u64),
        ) {
            expires_at = expires_at.min(iat.saturating_add(max_age));
        }
        let expires_in =
            Duration::from_secs(expires_at.saturating_sub(jsonwebtoken::get_current_timestamp()));
        let principal = Principal {
            idp: idp.config.name.clone(),
            user_id: claims::string_claim(&claims, &mappings.user_id).ok_or_else(|| {
                AuthFailure::Invalid(TokenRejection::MissingClaim(mappings.user_id.clone()))
            })?,
            username: claims::string_claim(&claims, &mappings.username),
            legacy_username: claims::string_claim(&claims, &mappings.legacy_username),
            legacy_username_claim: mappings.legacy_username.clone(),
            role: roles.primary,
            custom_roles: roles.custom,
            delegated_roles,
            scopes: claims::list_claim(&claims, &mappings.scopes),
            client: claims
                .get("azp")
                .or_else(|| claims.get("client_id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            claims_json: Value::Object(claims).to_string().into_boxed_str(),
        };
        Ok((principal, expires_in))
    }
}
