//! RFC 8693 token exchange, per module: the user's token in, a token for the
//! module's database audience out, verified against the IdP named by
//! `idpName` before any claim is used. Results are cached per module by the
//! hash of the subject token (so one user's identity can never be served to
//! another), and concurrent calls for one token make one exchange.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_delegate_plugin_api::{codes, ToolError};
use serde::Deserialize;
use serde_json::Value;

use super::cache::TtlCache;
use super::claims;
use super::verify::IdpRuntime;
use super::{Authenticator, Credentials};
use crate::config::auth::{ClientAuthMethod, TokenExchangeConfig};
use crate::config::IdpUse;

const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The database identity a call runs as, and the roles authorising it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegatedIdentity {
    pub identity: String,
    pub roles: Vec<String>,
}

pub struct TokenExchanger {
    module: String,
    config: TokenExchangeConfig,
    idp: Arc<IdpRuntime>,
    http: reqwest::Client,
    cache: Option<TtlCache<[u8; 32], Arc<DelegatedIdentity>>>,
    inflight: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

#[derive(Deserialize)]
struct OAuthErrorResponse {
    error: String,
}

fn failed(message: impl Into<String>) -> ToolError {
    ToolError::new(codes::TOKEN_EXCHANGE_FAILED, message)
}

impl TokenExchanger {
    /// `None` if `idpName` names no trusted IdP that serves token exchange.
    pub fn new(
        module: &str,
        config: TokenExchangeConfig,
        authenticator: &Authenticator,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let idp = authenticator
            .idp(&config.idp_name)
            .filter(|idp| idp.serves(IdpUse::TokenExchange))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "tokenExchange.idpName '{}' names no trusted IdP used for token exchange",
                    config.idp_name
                )
            })?;
        let cache = config
            .cache
            .enabled
            .then(|| TtlCache::new("exchanged", config.cache.max_entries));
        Ok(Self {
            module: module.to_owned(),
            config,
            idp,
            http,
            cache,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// The caller's identity for this module: cached, or exchanged now.
    pub async fn delegate(
        &self,
        credentials: &Credentials,
    ) -> Result<Arc<DelegatedIdentity>, ToolError> {
        let key = credentials.token_hash;
        let Some(cache) = &self.cache else {
            return self
                .timed_exchange(&credentials.token)
                .await
                .map(|(identity, _)| Arc::new(identity));
        };
        if let Some(hit) = cache.get(&key) {
            return Ok(hit);
        }
        let gate = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(key).or_default().clone()
        };
        let result = {
            let _turn = gate.lock().await;
            match cache.get(&key) {
                Some(hit) => Ok(hit),
                None => match self.timed_exchange(&credentials.token).await {
                    Ok((identity, token_expires_in)) => {
                        let identity = Arc::new(identity);
                        let ttl = token_expires_in
                            .min(Duration::from_secs(self.config.cache.ttl_seconds));
                        cache.insert(key, identity.clone(), Instant::now() + ttl);
                        Ok(identity)
                    }
                    // Errors are not cached: the next call tries again.
                    Err(error) => Err(error),
                },
            }
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &gate))
            && Arc::strong_count(&gate) <= 2
        {
            inflight.remove(&key);
        }
        result
    }

    /// [`TokenExchanger::exchange`], counted and timed in the metrics.
    async fn timed_exchange(
        &self,
        subject_token: &str,
    ) -> Result<(DelegatedIdentity, Duration), ToolError> {
        let started = Instant::now();
        let result = self.exchange(subject_token).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.error.as_str(),
        };
        crate::metrics::METRICS.exchange(&self.module, outcome, started.elapsed());
        result
    }

    /// One RFC 8693 round trip plus verification of the returned token.
    async fn exchange(
        &self,
        subject_token: &str,
    ) -> Result<(DelegatedIdentity, Duration), ToolError> {
        tracing::debug!(module = %self.module, "token exchange");
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", &self.config.audience),
        ];
        if let Some(scope) = &self.config.scope {
            form.push(("scope", scope));
        }
        if let Some(resource) = &self.config.resource {
            form.push(("resource", resource));
        }
        let mut request = self.http.post(&self.config.token_endpoint);
        match self.config.client_auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                request =
                    request.basic_auth(&self.config.client_id, Some(&self.config.client_secret));
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", &self.config.client_secret));
            }
        }
        let response = request.form(&form).send().await.map_err(|err| {
            let what = if err.is_timeout() {
                "timed out"
            } else {
                "could not be reached"
            };
            tracing::warn!(module = %self.module, error = %err, "token exchange request failed");
            failed(format!(
                "token exchange for module '{}' failed: the identity provider {what}",
                self.module
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            let oauth_error = response
                .json::<OAuthErrorResponse>()
                .await
                .map(|body| body.error)
                .ok();
            tracing::warn!(module = %self.module, %status, oauth_error = ?oauth_error, "token exchange refused");
            let mut error = failed(format!(
                "token exchange for module '{}' was refused by the identity provider (HTTP {})",
                self.module,
                status.as_u16()
            ));
            if let Some(code) = oauth_error {
                error = error.with("oauthError", code);
            }
            return Err(error);
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|_| failed("the identity provider's token exchange response is not valid"))?;
        let claims = self
            .idp
            .verify(&body.access_token)
            .await
            .map_err(|rejection| {
                tracing::warn!(module = %self.module, %rejection, "exchanged token refused");
                ToolError::new(
                    codes::EXCHANGED_TOKEN_INVALID,
                    format!(
                        "the exchanged token for module '{}' was refused: {rejection}",
                        self.module
                    ),
                )
            })?;
        let identity = claims::string_claim(&claims, &self.config.required_claim).ok_or_else(|| {
            ToolError::new(
                codes::DELEGATED_IDENTITY_MISSING,
                format!(
                    "the exchanged token has no '{}' claim, so there is no database identity to run as",
                    self.config.required_claim
                ),
            )
            .with("claim", self.config.required_claim.clone())
        })?;
        let raw_roles = claims::list_claim(&claims, &self.config.roles_claim);
        let roles = match self.idp.config.role_mappings.as_ref() {
            Some(mappings) => claims::map_roles(&raw_roles, Some(mappings))
                .map(|mapped| {
                    std::iter::once(mapped.primary)
                        .chain(mapped.custom)
                        .collect()
                })
                .unwrap_or_default(),
            None => raw_roles,
        };
        let expires_in = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| exp.saturating_sub(jsonwebtoken::get_current_timestamp()))
            .unwrap_or(0);
        Ok((
            DelegatedIdentity { identity, roles },
            Duration::from_secs(expires_in),
        ))
    }
}
