//! One IdP's signing keys: fetched over HTTP, cached, refreshed in the
//! background, and refreshed early (at most once per cool-down) when a token
//! names a `kid` we do not know, so key rotation needs no restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::DecodingKey;

/// A verification key and the algorithm family it serves.
pub struct VerifyKey {
    pub key: DecodingKey,
    /// `RSA`, `EC` or `OKP`.
    pub kty: &'static str,
}

type KeyMap = HashMap<String, Arc<VerifyKey>>;

/// Between forced fetches while the key set is empty (at start, or while
/// the IdP is unreachable): short, so the first requests after a start
/// succeed, but never a fetch per request, whatever the requests carry.
const EMPTY_SET_COOLDOWN: Duration = Duration::from_secs(2);
/// The largest JWKS document read; a key set is a few kilobytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

pub struct JwksCache {
    uri: String,
    http: reqwest::Client,
    keys: RwLock<Arc<KeyMap>>,
    cooldown: Duration,
    last_forced: Mutex<Option<Instant>>,
    /// One fetch at a time; callers that waited re-check the key map.
    fetching: tokio::sync::Mutex<()>,
    /// The last fetch failed (the IdP is unreachable or answers badly):
    /// an unknown key then means "cannot tell", not "not this IdP's".
    unreachable: std::sync::atomic::AtomicBool,
}

impl JwksCache {
    pub fn new(uri: String, http: reqwest::Client, cooldown: Duration) -> Self {
        Self {
            uri,
            http,
            keys: RwLock::new(Arc::new(HashMap::new())),
            cooldown,
            last_forced: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            unreachable: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the last fetch of the key set failed.
    pub fn unreachable(&self) -> bool {
        self.unreachable.load(std::sync::atomic::Ordering::Acquire)
    }

    fn snapshot(&self) -> Arc<KeyMap> {
        self.keys
            .read()
            .map(|keys| keys.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn find(keys: &KeyMap, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            // No kid: only unambiguous with a single key.
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// The key for `kid`, refreshing the set once if it is unknown and the
    /// cool-down allows.
    pub async fn key(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        if let Some(key) = Self::find(&self.snapshot(), kid) {
            return Some(key);
        }
        let _guard = self.fetching.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(key) = Self::find(&self.snapshot(), kid) {
            return Some(key);
        }
        {
            let mut last = self.last_forced.lock().unwrap_or_else(|p| p.into_inner());
            let cooldown = if self.snapshot().is_empty() {
                EMPTY_SET_COOLDOWN.min(self.cooldown)
            } else {
                self.cooldown
            };
            if last.is_some_and(|at| at.elapsed() < cooldown) {
                return None;
            }
            *last = Some(Instant::now());
        }
        if let Err(err) = self.fetch().await {
            tracing::warn!(jwks_uri = %self.uri, error = %err, "JWKS refresh failed");
        }
        Self::find(&self.snapshot(), kid)
    }

    /// Fetches the key set and replaces the cached one.
    pub async fn fetch(&self) -> Result<usize, String> {
        let fetched = self.fetch_once().await;
        self.unreachable
            .store(fetched.is_err(), std::sync::atomic::Ordering::Release);
        fetched
    }

    async fn fetch_once(&self) -> Result<usize, String> {
        let mut response = self
            .http
            .get(&self.uri)
            .send()
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let too_large = || format!("the key set is larger than {MAX_JWKS_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| format!("reading failed: {err}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|err| format!("not a JWK set: {err}"))?;
        let mut keys = KeyMap::new();
        for jwk in &set.keys {
            let kty = match jwk.algorithm {
                AlgorithmParameters::RSA(_) => "RSA",
                AlgorithmParameters::EllipticCurve(_) => "EC",
                AlgorithmParameters::OctetKeyPair(_) => "OKP",
                // Symmetric keys (and kinds we do not know) never verify
                // anything here.
                _ => continue,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    let kid = jwk.common.key_id.clone().unwrap_or_default();
                    keys.insert(kid, Arc::new(VerifyKey { key, kty }));
                }
                Err(err) => {
                    tracing::warn!(jwks_uri = %self.uri, error = %err, "unusable JWK skipped")
                }
            }
        }
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        tracing::debug!(jwks_uri = %self.uri, keys = count, "JWKS refreshed");
        Ok(count)
    }
}

/// Refreshes a key set every `interval` until the generation holding it is
/// gone (a reload replaced its authenticator).
pub async fn refresh_periodically(keys: std::sync::Weak<JwksCache>, interval: Duration) {
    loop {
        let Some(keys) = keys.upgrade() else {
            return;
        };
        if let Err(err) = keys.fetch().await {
            tracing::warn!(jwks_uri = %keys.uri, error = %err, "JWKS refresh failed");
        }
        drop(keys);
        tokio::time::sleep(interval).await;
    }
}
