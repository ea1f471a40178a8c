//! Verifying one JWT against one trusted IdP: algorithm allow-list, key from
//! the IdP's JWKS, signature, `iss`, `aud`, `exp`, `nbf`, `iat`/max age,
//! `azp`, `sub`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::JwksCache;
use crate::config::auth::TrustedIdp;
use crate::config::IdpUse;

/// Why a token was refused. The text is safe to send to the caller: it never
/// names configured issuers, audiences or keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("malformed token")]
    Malformed,
    #[error("token signing algorithm not accepted")]
    Algorithm,
    #[error("token not accepted by this server")]
    NotTrusted,
    #[error("token signing key not found")]
    UnknownKey,
    #[error("the identity provider's keys cannot be fetched right now; try again shortly")]
    KeysUnavailable,
    #[error("invalid token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token too old")]
    TooOld,
    #[error("token is missing the '{0}' claim")]
    MissingClaim(String),
    #[error("token was issued to a client that is not allowed")]
    ClientNotAllowed,
}

/// A trusted IdP at run time: its config, its uses and its keys.
pub struct IdpRuntime {
    pub config: TrustedIdp,
    pub uses: Vec<IdpUse>,
    pub jwks: Arc<JwksCache>,
    algorithms: Vec<Algorithm>,
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl IdpRuntime {
    pub fn new(config: TrustedIdp, uses: Vec<IdpUse>, http: reqwest::Client) -> Self {
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|name| name.parse::<Algorithm>().ok())
            .filter(|alg| !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        let jwks = Arc::new(JwksCache::new(
            config.jwks_uri.clone(),
            http,
            Duration::from_secs(config.security.jwks_refresh_cooldown_seconds),
        ));
        Self {
            config,
            uses,
            jwks,
            algorithms,
        }
    }

    pub fn serves(&self, use_: IdpUse) -> bool {
        self.uses.contains(&use_)
    }

    /// Whether this IdP issued a token with these (unverified) `iss`/`aud`.
    pub fn matches(&self, iss: Option<&str>, aud: &[String]) -> bool {
        iss == Some(self.config.issuer.as_str()) && aud.iter().any(|a| a == &self.config.audience)
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenRejection::Algorithm);
        }
        let key = match self.jwks.key(header.kid.as_deref()).await {
            Some(key) => key,
            // Unknown to a key set we could not refresh: the IdP is away,
            // which is not the caller's fault (503, not 401).
            None if self.jwks.unreachable() => return Err(TokenRejection::KeysUnavailable),
            None => return Err(TokenRejection::UnknownKey),
        };
        let family_matches = matches!(
            (key.kty, header.alg),
            (
                "RSA",
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
            ) | (
                "RSA",
                Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512
            ) | ("EC", Algorithm::ES256 | Algorithm::ES384)
                | ("OKP", Algorithm::EdDSA)
        );
        if !family_matches {
            return Err(TokenRejection::Algorithm);
        }
        let security = &self.config.security;
        let mut validation = Validation::new(header.alg);
        validation.leeway = security.clock_tolerance;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                match err.kind() {
                    ErrorKind::ExpiredSignature => TokenRejection::Expired,
                    ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
                    ErrorKind::InvalidSignature => TokenRejection::Signature,
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        TokenRejection::NotTrusted
                    }
                    ErrorKind::MissingRequiredClaim(claim) => {
                        TokenRejection::MissingClaim(claim.clone())
                    }
                    ErrorKind::InvalidAlgorithm => TokenRejection::Algorithm,
                    _ => TokenRejection::Malformed,
                }
            })?
            .claims;
        self.check_extra(&claims)?;
        Ok(claims)
    }

    /// Rules jsonwebtoken does not apply itself.
    fn check_extra(&self, claims: &Map<String, Value>) -> Result<(), TokenRejection> {
        let security = &self.config.security;
        let now = now_secs();
        if security.require_nbf && !claims.contains_key("nbf") {
            return Err(TokenRejection::MissingClaim("nbf".into()));
        }
        match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => {}
            _ => return Err(TokenRejection::MissingClaim("sub".into())),
        }
        let iat = claims.get("iat").and_then(Value::as_u64);
        if let Some(iat) = iat {
            if iat > now + security.clock_tolerance {
                return Err(TokenRejection::NotYetValid);
            }
        }
        if let Some(max_age) = security.max_token_age {
            let iat = iat.ok_or_else(|| TokenRejection::MissingClaim("iat".into()))?;
            if now.saturating_sub(iat) > max_age + security.clock_tolerance {
                return Err(TokenRejection::TooOld);
            }
        }
        let allowed: Vec<&String> = self
            .config
            .allowed_clients
            .iter()
            .flatten()
            .chain(self.config.client_id.iter())
            .collect();
        if !allowed.is_empty() {
            let client = claims
                .get("azp")
                .or_else(|| claims.get("client_id"))
                .and_then(Value::as_str);
            if !client.is_some_and(|client| allowed.iter().any(|a| a.as_str() == client)) {
                return Err(TokenRejection::ClientNotAllowed);
            }
        }
        Ok(())
    }
}

/// `iss` and `aud` read without verification, only to choose which IdP's
/// keys to verify with.
pub fn unverified_issuer_and_audience(token: &str) -> Option<(Option<String>, Vec<String>)> {
    let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    let iss = claims.get("iss").and_then(Value::as_str).map(str::to_owned);
    let aud = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Some((iss, aud))
}
