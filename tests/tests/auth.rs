//! The OAuth resource server against a real IdP on loopback: requestor
//! tokens, refusals, role-based tool visibility, protected-resource metadata.

use jsonwebtoken::Algorithm;
use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::{hs256_with_public_key, now, unsigned_token, SigningKey, TestIdp};
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use serde_json::{json, Value};

const AUDIENCE: &str = "mcp-oauth";
const CLIENT: &str = "mcp-inspector";

fn requestor_idp(idp: &TestIdp) -> Value {
    json!({
        "name": "requestor-jwt",
        "issuer": idp.issuer,
        "audience": AUDIENCE,
        "jwksUri": idp.jwks_uri(),
        "algorithms": ["RS256", "ES256"],
        "allowedClients": [CLIENT],
        "claimMappings": {"legacyUsername": "legacy_name", "roles": "realm_access.roles", "scopes": "scope"},
        "roleMappings": {
            "admin": ["mcp-admin"], "user": ["mcp-user"], "guest": ["mcp-guest"],
            "analyst": ["data-analyst"], "rejectUnmappedRoles": true
        },
        "security": {"clockTolerance": 5, "maxTokenAge": 7200, "jwksRefreshCooldownSeconds": 1}
    })
}

fn start(idp: &TestIdp, mcp: Value) -> (Host, tempfile::TempDir) {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({
        "auth": {"trustedIDPs": [requestor_idp(idp)]},
        "delegation": {"modules": {"echo1": {}}},
        "mcp": mcp
    });
    (Host::start(&config, plugins.path()), plugins)
}

/// A user token: roles under `realm_access.roles`, the allowed `azp`.
fn user_token(idp: &TestIdp, sub: &str, roles: &[&str], extra: Value) -> String {
    let mut claims = json!({"realm_access": {"roles": roles}, "azp": CLIENT,
                            "legacy_name": format!("{sub}_db"), "scope": "openid mcp:tools"});
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    idp.mint(sub, AUDIENCE, claims)
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[test]
fn rs256_and_es256_tokens_are_accepted_and_a_rotated_key_is_picked_up() {
    let idp = TestIdp::start();
    let (mut host, _plugins) = start(&idp, json!({}));
    host.bearer = Some(user_token(
        &idp,
        "alice",
        &["mcp-user", "data-analyst"],
        json!({}),
    ));
    let info = host.call_tool("user-info", json!({}))["structuredContent"].clone();
    assert_eq!(info["userId"], "alice");
    assert_eq!(info["role"], "user");
    assert_eq!(info["customRoles"], json!(["analyst"]));
    assert_eq!(info["legacyUsername"], "alice_db");
    assert_eq!(info["scopes"], json!(["openid", "mcp:tools"]));
    assert!(info.get("claims").is_none());
    let info =
        host.call_tool("user-info", json!({"includeClaims": true}))["structuredContent"].clone();
    assert_eq!(info["claims"]["sub"], "alice");
    assert!(info["claims"].get("jti").is_none() && info["claims"].get("azp").is_none());

    // Rotation: a new ES256 key appears in the JWKS; no restart needed.
    let rotated = idp.add_key("ec-2", Algorithm::ES256);
    let claims = idp.claims(
        "bob",
        AUDIENCE,
        json!({"realm_access": {"roles": ["mcp-admin"]}, "azp": CLIENT}),
    );
    host.bearer = Some(rotated.sign(&claims));
    let info = host.call_tool("user-info", json!({}))["structuredContent"].clone();
    assert_eq!(info["userId"], "bob");
    assert_eq!(info["role"], "admin");
}

#[test]
fn bad_tokens_are_refused_with_the_right_status_and_challenge() {
    let idp = TestIdp::start();
    let (host, _plugins) = start(&idp, json!({}));
    let key = idp.key();
    let good = |extra: Value| {
        idp.claims("mallory", AUDIENCE, {
            let mut base = json!({"realm_access": {"roles": ["mcp-user"]}, "azp": CLIENT});
            if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
                base.extend(extra);
            }
            base
        })
    };
    let rogue_same_kid = SigningKey::generate(&key.kid, Algorithm::RS256);
    let unknown_kid = SigningKey::generate("not-in-jwks", Algorithm::RS256);
    let t = now();
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("no token", None, 401, ""),
        (
            "malformed",
            Some("not.a.jwt".into()),
            401,
            "malformed token",
        ),
        (
            "bad signature",
            Some(rogue_same_kid.sign(&good(json!({})))),
            401,
            "invalid token signature",
        ),
        (
            "alg none",
            Some(unsigned_token(&good(json!({})))),
            401,
            "malformed token",
        ),
        (
            "HS256 keyed with the RSA public key",
            Some(hs256_with_public_key(&key, &good(json!({})))),
            401,
            "algorithm not accepted",
        ),
        (
            "expired",
            Some(key.sign(&good(
                json!({"iat": t - 4000, "nbf": t - 4000, "exp": t - 600}),
            ))),
            401,
            "token expired",
        ),
        (
            "not yet valid",
            Some(key.sign(&good(json!({"nbf": t + 600})))),
            401,
            "not yet valid",
        ),
        (
            "too old",
            Some(key.sign(&good(json!({"iat": t - 10_000, "nbf": t - 10_000})))),
            401,
            "token too old",
        ),
        (
            "wrong issuer",
            Some(key.sign(&good(json!({"iss": "http://evil.example"})))),
            401,
            "not accepted",
        ),
        (
            "wrong audience",
            Some(key.sign(&good(json!({"aud": "someone-else"})))),
            401,
            "not accepted",
        ),
        (
            "azp mismatch",
            Some(key.sign(&good(json!({"azp": "other-client"})))),
            401,
            "client that is not allowed",
        ),
        (
            "no azp",
            Some(key.sign(&good(json!({"azp": null})))),
            401,
            "client that is not allowed",
        ),
        (
            "no sub",
            Some(key.sign(&good(json!({"sub": null})))),
            401,
            "sub",
        ),
        (
            "unknown kid",
            Some(unknown_kid.sign(&good(json!({})))),
            401,
            "signing key not found",
        ),
        (
            "unmapped roles",
            Some(key.sign(&good(json!({"realm_access": {"roles": ["intern"]}})))),
            403,
            "no role",
        ),
    ];
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        host.base_url
    );
    for (name, token, status, reason) in cases {
        let (got, challenge, body) = host.post_with_token(token.as_deref(), LIST);
        assert_eq!(got, status, "{name}: {body}");
        assert!(challenge.starts_with("Bearer "), "{name}: {challenge}");
        assert!(challenge.contains(&metadata), "{name}: {challenge}");
        match (token.is_some(), status) {
            (false, _) => assert!(!challenge.contains("error="), "{name}: {challenge}"),
            (true, 401) => assert!(
                challenge.contains("error=\"invalid_token\""),
                "{name}: {challenge}"
            ),
            (true, _) => assert!(
                challenge.contains("error=\"insufficient_scope\""),
                "{name}: {challenge}"
            ),
        }
        assert!(body.contains(reason), "{name}: {body}");
        // Nothing about our configuration leaks.
        assert!(
            !body.contains(&idp.issuer) && !challenge.contains(&idp.issuer),
            "{name}: {body}"
        );
        assert!(!body.contains(AUDIENCE), "{name}: {body}");
    }
    // A token in the query string is not a credential.
    let token = user_token(&idp, "alice", &["mcp-user"], json!({}));
    let response = host
        .http()
        .post(format!("{}?access_token={token}", host.mcp_url()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(LIST)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[test]
fn users_and_guests_see_different_tools_and_hidden_tools_cannot_be_called() {
    let idp = TestIdp::start();
    let (mut host, _plugins) = start(&idp, json!({}));
    host.bearer = Some(user_token(&idp, "ursula", &["mcp-user"], json!({})));
    assert_eq!(
        host.tool_names(),
        ["echo1-echo", "health-check", "user-info"]
    );
    host.bearer = Some(user_token(&idp, "gus", &["mcp-guest"], json!({})));
    assert_eq!(host.tool_names(), ["user-info"]);
    for hidden in ["echo1-echo", "health-check"] {
        let response = host.rpc(
            "tools/call",
            json!({"name": hidden, "arguments": {"message": "x"}}),
        );
        assert_eq!(response["error"]["code"], -32602, "{hidden}: {response}");
        assert_eq!(
            response["error"]["message"],
            format!("Unknown tool: {hidden}")
        );
    }
    assert_eq!(
        host.call_tool("user-info", json!({}))["structuredContent"]["role"],
        "guest"
    );
}

#[test]
fn protected_resource_metadata_matches_the_config() {
    let idp = TestIdp::start();
    let (host, _plugins) = start(
        &idp,
        json!({"publicUrl": "https://db-mcp.example.com/tools/", "oauth": {"scopes": ["mcp:tools", "openid"]}}),
    );
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let (status, document) = host.get(path);
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            document,
            json!({
                "resource": "https://db-mcp.example.com/tools/mcp",
                "authorization_servers": [idp.issuer],
                "scopes_supported": ["mcp:tools", "openid"],
                "bearer_methods_supported": ["header"]
            })
        );
    }
    let (status, challenge, _) = host.post_with_token(None, LIST);
    assert_eq!(status, 401);
    assert_eq!(
        challenge,
        "Bearer resource_metadata=\"https://db-mcp.example.com/tools/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools openid\""
    );
}

#[test]
fn a_token_without_a_required_scope_gets_403_insufficient_scope() {
    let idp = TestIdp::start();
    let (mut host, _plugins) = start(&idp, json!({"oauth": {"requiredScopes": ["mcp:admin"]}}));
    let token = user_token(&idp, "alice", &["mcp-user"], json!({}));
    let (status, challenge, body) = host.post_with_token(Some(&token), LIST);
    assert_eq!(status, 403, "{body}");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp:admin\""), "{challenge}");
    host.bearer = Some(user_token(
        &idp,
        "root",
        &["mcp-admin"],
        json!({"scope": "mcp:admin"}),
    ));
    assert_eq!(host.tool_names().len(), 3);
}

#[test]
fn configs_without_auth_or_with_auth_off_on_a_public_address_are_refused() {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let run = |config: Value, extra: &[&str]| {
        mcp_delegate_tests::host::serve_to_exit(&config, plugins.path(), extra)
    };
    let (code, _, stderr) = run(json!({"delegation": {"modules": {"echo": {}}}}), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("auth.trustedIDPs"), "{stderr}");
    let (code, _, stderr) = run(
        json!({"auth": {"mode": "none"}, "delegation": {"modules": {"echo": {}}}}),
        &["--bind", "0.0.0.0"],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refusing to serve without authentication"),
        "{stderr}"
    );
}

/// A verified token is cached, but never past its age limit: with
/// `maxTokenAge`, a token issued long enough ago stops working even though
/// its `exp` is far away and its verification is cached.
#[test]
fn a_cached_token_expires_at_its_age_limit() {
    let idp = TestIdp::start();
    let mut config = requestor_idp(&idp);
    config["security"] = json!({"clockTolerance": 0, "maxTokenAge": 4});
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let mut host = Host::start(
        &json!({"auth": {"trustedIDPs": [config]}, "delegation": {"modules": {"echo1": {}}}}),
        plugins.path(),
    );
    let token = user_token(
        &idp,
        "alice",
        &["mcp-user"],
        json!({"iat": now() - 1, "exp": now() + 3600}),
    );
    host.bearer = Some(token.clone());
    let (status, _, _) = host.post_with_token(Some(&token), LIST);
    assert_eq!(status, 200);
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let (status, _, body) = host.post_with_token(Some(&token), LIST);
    assert_eq!(
        status, 401,
        "a token past maxTokenAge was served from the cache: {body}"
    );
}

/// While the IdP serves no keys, tokens naming unknown keys do not make
/// the server fetch the key set once per request.
#[test]
fn an_empty_key_set_is_refetched_at_most_once_per_cool_down() {
    let idp = TestIdp::start();
    idp.withhold_keys(true);
    let (host, _plugins) = start(&idp, json!({}));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = idp.jwks_fetches();
    let started = std::time::Instant::now();
    for i in 0..60 {
        let key = idp.key().with_kid(&format!("unknown-{i}"));
        let token = key.sign(&idp.claims("mallory", AUDIENCE, json!({"azp": CLIENT})));
        let (status, _, _) = host.post_with_token(Some(&token), LIST);
        assert_eq!(status, 401);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = idp.jwks_fetches() - before;
    // One forced fetch per cool-down (1 s here) at most, plus one at the
    // edge: before the fix, one fetch per request.
    let allowed = elapsed.ceil() as u32 + 1;
    assert!(
        fetches <= allowed,
        "{fetches} key-set fetches for 60 requests in {elapsed:.1} s"
    );
    // Keys back: a good token works again once the cool-down has passed.
    idp.withhold_keys(false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let good = user_token(&idp, "alice", &["mcp-user"], json!({}));
    assert_eq!(host.post_with_token(Some(&good), LIST).0, 200);
}

/// A key set larger than the limit is not read: nothing verifies against
/// it (503 `temporarily_unavailable`: the IdP's keys cannot be had, which
/// is not the token's fault), and the server keeps serving.
#[test]
fn an_oversized_key_set_is_refused() {
    let idp = TestIdp::start();
    let mut config = requestor_idp(&idp);
    config["jwksUri"] = json!(idp.padded_jwks_uri());
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let host = Host::start(
        &json!({"auth": {"trustedIDPs": [config]}, "delegation": {"modules": {"echo1": {}}}}),
        plugins.path(),
    );
    let token = user_token(&idp, "alice", &["mcp-user"], json!({}));
    let (status, _, body) = host.post_with_token(Some(&token), LIST);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("temporarily_unavailable"), "{body}");
    assert!(
        host.logs().iter().any(|line| line.contains("larger than")),
        "{:?}",
        host.logs()
    );
    assert_eq!(host.get("/health").0, 200);
}

/// The IdP goes away: tokens already verified keep working, new tokens
/// signed by a key already known still verify (no IdP round trip), a
/// token whose key is unknown gets 503 `temporarily_unavailable` (not a
/// misleading 401); when the IdP returns, the new key is picked up by
/// itself.
#[test]
fn an_idp_outage_keeps_known_keys_working_and_answers_503_for_unknown_ones() {
    let idp = TestIdp::start();
    let (host, _plugins) = start(&idp, json!({}));
    let cached = user_token(&idp, "alice", &["mcp-user"], json!({}));
    let (status, _, _) = host.post_with_token(Some(&cached), LIST);
    assert_eq!(status, 200);

    idp.set_down(true);
    let (status, _, _) = host.post_with_token(Some(&cached), LIST);
    assert_eq!(status, 200, "an already verified token");
    let fresh = user_token(&idp, "bob", &["mcp-user"], json!({}));
    let (status, _, body) = host.post_with_token(Some(&fresh), LIST);
    assert_eq!(status, 200, "a new token under a known key: {body}");
    let rotated = idp.add_key("rsa-2", Algorithm::RS256);
    let claims = idp.claims(
        "carol",
        AUDIENCE,
        json!({"realm_access": {"roles": ["mcp-user"]},
        "azp": CLIENT, "legacy_name": "carol_db"}),
    );
    let new_key_token = rotated.sign(&claims);
    let (status, _, body) = host.post_with_token(Some(&new_key_token), LIST);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("temporarily_unavailable"), "{body}");

    idp.set_down(false);
    // The forced-refresh cool-down is 1 s in this config.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let (status, _, body) = host.post_with_token(Some(&new_key_token), LIST);
    assert_eq!(status, 200, "recovered by itself: {body}");
}
