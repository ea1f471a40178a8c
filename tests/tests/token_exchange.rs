//! RFC 8693 token exchange per module, against the test IdP: identities per
//! user, caching (counted at the IdP), single-flight, and every failure path.

use std::sync::Arc;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::{ExchangeFault, TestIdp, CLIENT_ID, CLIENT_SECRET};
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use serde_json::{json, Value};

const AUDIENCE: &str = "mcp-oauth";
const DB_AUDIENCE: &str = "primary-db";

fn exchange_config(idp: &TestIdp, method: &str) -> Value {
    json!({
        "idpName": "sql-delegation-te-jwt",
        "tokenEndpoint": idp.token_endpoint(),
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
        "audience": DB_AUDIENCE,
        "requiredClaim": "legacy_name",
        "clientAuthMethod": method,
        "cache": {"enabled": true, "ttlSeconds": 60}
    })
}

fn start(idp: &TestIdp) -> (Host, tempfile::TempDir) {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({
        "auth": {"trustedIDPs": [
            {"name": "requestor-jwt", "issuer": idp.issuer, "audience": AUDIENCE,
             "jwksUri": idp.jwks_uri(),
             "roleMappings": {"user": ["mcp-user"], "admin": ["mcp-admin"]}},
            {"name": "sql-delegation-te-jwt", "issuer": idp.issuer, "audience": DB_AUDIENCE,
             "jwksUri": idp.jwks_uri()}
        ]},
        "delegation": {"modules": {
            "echo1": {"tokenExchange": exchange_config(idp, "client_secret_basic")},
            "echo2": {},
            "echo3": {"tokenExchange": exchange_config(idp, "client_secret_post"),
                      "requiredScopes": ["db:analytics"]}
        }}
    });
    (Host::start(&config, plugins.path()), plugins)
}

fn token(idp: &TestIdp, sub: &str, extra: Value) -> String {
    let mut claims = json!({"roles": ["mcp-user"], "legacy_name": format!("{sub}_requestor")});
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    idp.mint(sub, AUDIENCE, claims)
}

/// The call context the echo plugin saw.
fn context_seen(host: &mut Host, tool: &str) -> Value {
    let result = host.call_tool(tool, json!({"message": "who am i"}));
    assert_eq!(result["isError"], false, "{result}");
    result["structuredContent"]["context"].clone()
}

fn tool_error(host: &mut Host, tool: &str) -> Value {
    Host::tool_error(&host.call_tool(tool, json!({"message": "m"})))
}

#[test]
fn each_user_gets_their_own_identity_and_one_exchange_serves_many_calls() {
    let idp = TestIdp::start();
    idp.add_user("alice", "alice_db", &["sql-read"]);
    idp.add_user("bob", "bob_db", &["sql-read", "sql-write"]);
    let (mut host, _plugins) = start(&idp);
    let alice = token(&idp, "alice", json!({}));
    let bob = token(&idp, "bob", json!({}));
    for round in 0..5 {
        for (user, token, identity) in [("alice", &alice, "alice_db"), ("bob", &bob, "bob_db")] {
            host.bearer = Some(token.clone());
            let context = context_seen(&mut host, "echo1-echo");
            assert_eq!(
                context["delegatedIdentity"], identity,
                "round {round}, {user}"
            );
            assert_eq!(context["userId"], user);
        }
    }
    host.bearer = Some(bob.clone());
    assert_eq!(
        context_seen(&mut host, "echo1-echo")["delegatedRoles"],
        json!(["sql-read", "sql-write"])
    );
    // Ten calls each, one exchange each, counted at the IdP.
    assert_eq!(idp.exchanges_for("alice"), 1);
    assert_eq!(idp.exchanges_for("bob"), 1);
    assert!(idp.client_auth_methods().iter().all(|m| m == "basic"));

    // Without tokenExchange the identity is the requestor's legacy name.
    host.bearer = Some(alice.clone());
    let context = context_seen(&mut host, "echo2-echo");
    assert_eq!(context["delegatedIdentity"], "alice_requestor");
    assert_eq!(context["delegatedRoles"], json!(["user"]));

    // A module's own token exchange uses its own client auth method.
    host.bearer = Some(token(
        &idp,
        "alice",
        json!({"scope": "db:analytics", "jti": "second"}),
    ));
    assert_eq!(
        context_seen(&mut host, "echo3-echo")["delegatedIdentity"],
        "alice_db"
    );
    assert_eq!(
        idp.client_auth_methods().last().map(String::as_str),
        Some("post")
    );
}

#[test]
fn concurrent_calls_with_one_token_make_one_exchange() {
    let idp = TestIdp::start();
    idp.add_user("carol", "carol_db", &["sql-read"]);
    let (host, _plugins) = start(&idp);
    let carol = token(&idp, "carol", json!({}));
    let host = Arc::new(host);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let host = host.clone();
            let carol = carol.clone();
            std::thread::spawn(move || {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "echo1-echo", "arguments": {"message": "m"}}});
                let (status, _, text) = host.post_with_token(Some(&carol), body.to_string());
                assert_eq!(status, 200, "{text}");
                let response: Value = serde_json::from_str(&text).unwrap();
                response["result"]["structuredContent"]["context"]["delegatedIdentity"].clone()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), "carol_db");
    }
    assert_eq!(idp.exchanges_for("carol"), 1);
}

#[test]
fn exchange_failures_are_clear_tool_errors_and_are_not_cached() {
    let idp = TestIdp::start();
    for user in ["dave", "erin", "frank", "gina"] {
        idp.add_user(user, &format!("{user}_db"), &["sql-read"]);
    }
    let (mut host, _plugins) = start(&idp);

    idp.set_fault(Some(ExchangeFault::InvalidGrant));
    host.bearer = Some(token(&idp, "dave", json!({})));
    let error = tool_error(&mut host, "echo1-echo");
    assert_eq!(error["error"], "TOKEN_EXCHANGE_FAILED");
    assert_eq!(error["oauthError"], "invalid_grant");
    // Not cached: once the IdP agrees, the same token works.
    idp.set_fault(None);
    assert_eq!(
        context_seen(&mut host, "echo1-echo")["delegatedIdentity"],
        "dave_db"
    );
    assert_eq!(idp.exchanges_for("dave"), 2);

    idp.set_fault(Some(ExchangeFault::ServerError));
    host.bearer = Some(token(&idp, "erin", json!({})));
    let error = tool_error(&mut host, "echo1-echo");
    assert_eq!(error["error"], "TOKEN_EXCHANGE_FAILED");
    assert!(
        error["message"].as_str().unwrap().contains("HTTP 503"),
        "{error}"
    );

    idp.set_fault(Some(ExchangeFault::BadSignature));
    host.bearer = Some(token(&idp, "frank", json!({})));
    let error = tool_error(&mut host, "echo1-echo");
    assert_eq!(error["error"], "EXCHANGED_TOKEN_INVALID");
    assert!(
        error["message"].as_str().unwrap().contains("signature"),
        "{error}"
    );

    idp.set_fault(Some(ExchangeFault::NoIdentityClaim));
    host.bearer = Some(token(&idp, "gina", json!({})));
    let error = tool_error(&mut host, "echo1-echo");
    assert_eq!(error["error"], "DELEGATED_IDENTITY_MISSING");
    assert_eq!(error["claim"], "legacy_name");
    idp.set_fault(None);

    // No legacy name on the requestor token and no token exchange: refused,
    // never run as the service account.
    host.bearer = Some(token(&idp, "hank", json!({"legacy_name": null})));
    let error = tool_error(&mut host, "echo2-echo");
    assert_eq!(error["error"], "DELEGATED_IDENTITY_MISSING");

    // A module's requiredScopes.
    host.bearer = Some(token(&idp, "dave", json!({"jti": "no-scope"})));
    let error = tool_error(&mut host, "echo3-echo");
    assert_eq!(error["error"], "INSUFFICIENT_SCOPE");
    assert_eq!(error["requiredScopes"], json!(["db:analytics"]));
}

#[test]
fn an_exchanged_token_cannot_log_in_to_the_mcp_server() {
    let idp = TestIdp::start();
    let (host, _plugins) = start(&idp);
    // Minted exactly like an exchanged token: the database audience.
    let leaked = idp.mint(
        "alice",
        DB_AUDIENCE,
        json!({"legacy_name": "alice_db", "roles": ["mcp-user"]}),
    );
    let (status, challenge, _) = host.post_with_token(
        Some(&leaked),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    );
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"));
}
