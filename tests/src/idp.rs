//! A small but real identity provider on loopback, for tests and the demo:
//! OIDC discovery, a JWKS endpoint, an RFC 8693 token endpoint with client
//! authentication, and token minting with arbitrary claims and keys (RS256
//! and ES256). It counts what it is asked, so tests can assert caching.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};

/// A signing key: private part for minting, JWK for publishing.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// PEM of the public key (for the "HS256 keyed with the public key" attack).
    pub public_pem: Vec<u8>,
    jwk: Jwk,
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut command = Command::new("openssl");
    command.args(args);
    let output = match input {
        None => command.output(),
        Some(input) => {
            use std::io::Write;
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("run openssl");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("write to openssl");
            child.wait_with_output()
        }
    }
    .expect("run openssl");
    assert!(output.status.success(), "openssl {args:?} failed");
    output.stdout
}

impl SigningKey {
    /// A fresh key pair (RS256: RSA 2048; ES256: P-256).
    pub fn generate(kid: &str, alg: Algorithm) -> Self {
        let private_pem = match alg {
            Algorithm::RS256 => openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ],
                None,
            ),
            Algorithm::ES256 => openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ],
                None,
            ),
            other => panic!("unsupported test key algorithm {other:?}"),
        };
        let public_pem = openssl(&["pkey", "-pubout"], Some(&private_pem));
        let (encoding, decoding) = match alg {
            Algorithm::RS256 => (
                EncodingKey::from_rsa_pem(&private_pem).expect("RSA key"),
                DecodingKey::from_rsa_pem(&public_pem).expect("RSA public key"),
            ),
            _ => (
                EncodingKey::from_ec_pem(&private_pem).expect("EC key"),
                DecodingKey::from_ec_pem(&public_pem).expect("EC public key"),
            ),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("JWK");
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            decoding,
            public_pem,
            jwk,
        }
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign");
        crate::audit_sweep::record("tokens", &token);
        token
    }

    /// This key's JWK with another `kid` (to forge a signature under a
    /// published key id).
    pub fn with_kid(&self, kid: &str) -> Self {
        let mut key = self.clone();
        key.kid = kid.to_owned();
        key.jwk.common.key_id = Some(kid.to_owned());
        key
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How the token endpoint should misbehave, for error-path tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeFault {
    InvalidGrant,
    ServerError,
    /// Sign the exchanged token with a key that is not in the JWKS.
    BadSignature,
    /// Leave the identity claim out of the exchanged token.
    NoIdentityClaim,
}

/// A user the token endpoint knows: their database identity and roles.
#[derive(Debug, Clone)]
pub struct DbUser {
    pub legacy_name: String,
    pub roles: Vec<String>,
}

struct State {
    keys: Vec<SigningKey>,
    client_id: String,
    client_secret: String,
    users: HashMap<String, DbUser>,
    identity_claim: String,
    exchanged_ttl: u64,
    fault: Option<ExchangeFault>,
    /// Exchanges per subject (`sub` of the subject token).
    exchanges: HashMap<String, u32>,
    /// `basic` or `post`, per exchange, in order.
    client_auth_methods: Vec<String>,
    jwks_fetches: u32,
    /// Serve an empty key set (an IdP in trouble).
    withhold_keys: bool,
    /// Every endpoint answers 503 (an outage behind a load balancer).
    down: bool,
    rogue: SigningKey,
}

pub struct TestIdp {
    pub issuer: String,
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub const CLIENT_ID: &str = "mcp-server-client";
pub const CLIENT_SECRET: &str = "test-client-secret";

impl TestIdp {
    /// Starts on a free loopback port with one RS256 key (`rsa-1`).
    pub fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind IdP"));
        let port = server
            .server_addr()
            .to_ip()
            .map(|addr| addr.port())
            .expect("IdP port");
        let issuer = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State {
            keys: vec![SigningKey::generate("rsa-1", Algorithm::RS256)],
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            users: HashMap::new(),
            identity_claim: "legacy_name".into(),
            exchanged_ttl: 300,
            fault: None,
            exchanges: HashMap::new(),
            client_auth_methods: Vec::new(),
            jwks_fetches: 0,
            withhold_keys: false,
            down: false,
            rogue: SigningKey::generate("rsa-1", Algorithm::RS256),
        }));
        let thread = {
            let server = server.clone();
            let state = state.clone();
            let issuer = issuer.clone();
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    handle(request, &state, &issuer);
                }
            })
        };
        Self {
            issuer,
            state,
            server,
            thread: Some(thread),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The first published key.
    pub fn key(&self) -> SigningKey {
        self.state().keys[0].clone()
    }

    /// Generates and publishes another key (key rotation).
    pub fn add_key(&self, kid: &str, alg: Algorithm) -> SigningKey {
        let key = SigningKey::generate(kid, alg);
        self.state().keys.push(key.clone());
        key
    }

    /// Registers a user for token exchange.
    pub fn add_user(&self, sub: &str, legacy_name: &str, roles: &[&str]) {
        self.state().users.insert(
            sub.to_owned(),
            DbUser {
                legacy_name: legacy_name.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
        );
    }

    pub fn set_fault(&self, fault: Option<ExchangeFault>) {
        self.state().fault = fault;
    }

    pub fn set_exchanged_ttl(&self, seconds: u64) {
        self.state().exchanged_ttl = seconds;
    }

    pub fn exchanges_for(&self, sub: &str) -> u32 {
        self.state().exchanges.get(sub).copied().unwrap_or(0)
    }

    pub fn client_auth_methods(&self) -> Vec<String> {
        self.state().client_auth_methods.clone()
    }

    pub fn jwks_fetches(&self) -> u32 {
        self.state().jwks_fetches
    }

    /// Serves an empty key set at `/jwks` while `withhold` is set.
    /// Takes the IdP down (every endpoint answers 503) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    pub fn withhold_keys(&self, withhold: bool) {
        self.state().withhold_keys = withhold;
    }

    /// A JWKS address that serves the real keys padded past any sane size.
    pub fn padded_jwks_uri(&self) -> String {
        format!("{}/jwks-padded", self.issuer)
    }

    /// Standard claims for a requestor token: issuer, audience, subject,
    /// issued now, valid for an hour; `extra` adds or overrides.
    pub fn claims(&self, sub: &str, audience: &str, extra: Value) -> Value {
        let now = now();
        let mut claims = json!({
            "iss": self.issuer, "aud": audience, "sub": sub,
            "iat": now, "nbf": now, "exp": now + 3600,
            "jti": format!("jti-{sub}-{now}"),
            "preferred_username": sub,
        });
        if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            for (key, value) in extra {
                if value.is_null() {
                    claims.remove(&key);
                } else {
                    claims.insert(key, value);
                }
            }
        }
        claims
    }

    /// A token signed with the first published key.
    pub fn mint(&self, sub: &str, audience: &str, extra: Value) -> String {
        self.key().sign(&self.claims(sub, audience, extra))
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `alg: none`, unsigned.
pub fn unsigned_token(claims: &Value) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!(
        "{}.{}.",
        engine.encode(r#"{"alg":"none","typ":"JWT"}"#),
        engine.encode(claims.to_string())
    );
    crate::audit_sweep::record("tokens", &token);
    token
}

/// HS256 keyed with an RSA *public* key: the classic algorithm-confusion
/// forgery against verifiers that trust the header's `alg`.
pub fn hs256_with_public_key(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&key.public_pem))
        .expect("sign");
    crate::audit_sweep::record("tokens", &token);
    token
}

fn respond(request: tiny_http::Request, status: u16, body: &Value) {
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header");
    let response = tiny_http::Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(header);
    let _ = request.respond(response);
}

fn handle(mut request: tiny_http::Request, state: &Mutex<State>, issuer: &str) {
    let url = request.url().to_owned();
    if state.lock().unwrap_or_else(|p| p.into_inner()).down {
        respond(request, 503, &json!({"error": "temporarily_unavailable"}));
        return;
    }
    match (request.method(), url.as_str()) {
        (tiny_http::Method::Get, "/.well-known/openid-configuration") => respond(
            request,
            200,
            &json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/jwks"),
                "token_endpoint": format!("{issuer}/token"),
                "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"]
            }),
        ),
        (tiny_http::Method::Get, "/jwks" | "/jwks-padded") => {
            let set = {
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                state.jwks_fetches += 1;
                let keys = if state.withhold_keys {
                    Vec::new()
                } else {
                    state.keys.iter().map(|key| key.jwk.clone()).collect()
                };
                JwkSet { keys }
            };
            let mut body = serde_json::to_value(set).unwrap_or_default();
            if url == "/jwks-padded" {
                body["padding"] = json!("x".repeat(300 * 1024));
            }
            respond(request, 200, &body);
        }
        (tiny_http::Method::Post, "/token") => {
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let authorization = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.as_str().to_owned());
            let (status, reply) = exchange(state, issuer, &body, authorization.as_deref());
            respond(request, status, &reply);
        }
        _ => respond(request, 404, &json!({"error": "not_found"})),
    }
}

fn oauth_error(code: &str) -> (u16, Value) {
    (
        400,
        json!({"error": code, "error_description": format!("test IdP: {code}")}),
    )
}

fn exchange(
    state: &Mutex<State>,
    issuer: &str,
    body: &str,
    authorization: Option<&str>,
) -> (u16, Value) {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    // Client authentication: HTTP Basic or form fields, never both missing.
    let (client_id, client_secret, method) =
        match authorization.and_then(|a| a.strip_prefix("Basic ")) {
            Some(encoded) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .unwrap_or_default();
                let (id, secret) = decoded.split_once(':').unwrap_or_default();
                (id.to_owned(), secret.to_owned(), "basic")
            }
            None => (
                form.get("client_id").cloned().unwrap_or_default(),
                form.get("client_secret").cloned().unwrap_or_default(),
                "post",
            ),
        };
    if client_id != state.client_id || client_secret != state.client_secret {
        return (401, json!({"error": "invalid_client"}));
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:token-exchange")
        || form.get("subject_token_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:token-type:access_token")
    {
        return oauth_error("unsupported_grant_type");
    }
    let Some(audience) = form.get("audience").cloned() else {
        return oauth_error("invalid_target");
    };
    // The subject token must be one of ours and still valid.
    let subject = form.get("subject_token").cloned().unwrap_or_default();
    let header = match jsonwebtoken::decode_header(&subject) {
        Ok(header) => header,
        Err(_) => return oauth_error("invalid_grant"),
    };
    let Some(key) = state
        .keys
        .iter()
        .find(|k| Some(&k.kid) == header.kid.as_ref())
    else {
        return oauth_error("invalid_grant");
    };
    let mut validation = Validation::new(key.alg);
    validation.validate_aud = false;
    let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(&subject, &key.decoding, &validation)
    else {
        return oauth_error("invalid_grant");
    };
    let sub = data
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    state.client_auth_methods.push(method.to_owned());
    *state.exchanges.entry(sub.clone()).or_default() += 1;
    match state.fault {
        Some(ExchangeFault::InvalidGrant) => return oauth_error("invalid_grant"),
        Some(ExchangeFault::ServerError) => {
            return (503, json!({"error": "temporarily_unavailable"}))
        }
        _ => {}
    }
    let Some(user) = state.users.get(&sub).cloned() else {
        return oauth_error("invalid_grant");
    };
    let now = now();
    let mut claims = json!({
        "iss": issuer, "aud": audience, "sub": sub, "azp": state.client_id,
        "iat": now, "exp": now + state.exchanged_ttl, "roles": user.roles,
    });
    if state.fault != Some(ExchangeFault::NoIdentityClaim) {
        claims[state.identity_claim.as_str()] = json!(user.legacy_name);
    }
    let signer = if state.fault == Some(ExchangeFault::BadSignature) {
        state.rogue.clone()
    } else {
        state.keys[0].clone()
    };
    let token = signer.sign(&claims);
    (
        200,
        json!({
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": state.exchanged_ttl,
        }),
    )
}

/// How long a test may wait for something asynchronous.
pub const PATIENCE: Duration = Duration::from_secs(10);
