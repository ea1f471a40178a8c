//! The IdP goes away while clients keep calling: verified tokens and
//! cached exchanged identities keep working (the latter until their cache
//! entry expires), new tokens under a known key keep verifying, a token
//! under an unknown key gets 503 `temporarily_unavailable`, a new exchange
//! a TOKEN_EXCHANGE_FAILED tool error; everything recovers by itself, and
//! a key rotated in under load fails no call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::{SigningKey, TestIdp, CLIENT_ID, CLIENT_SECRET};
use mcp_delegate_tests::load::{call_once, summary, Call, Load, Outcome, Record};
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use serde_json::{json, Value};

const AUDIENCE: &str = "mcp-oauth";
const DB_AUDIENCE: &str = "primary-db";

fn exchange(idp: &TestIdp, ttl_seconds: u64) -> Value {
    json!({
        "idpName": "sql-delegation-te-jwt", "tokenEndpoint": idp.token_endpoint(),
        "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "audience": DB_AUDIENCE,
        "cache": {"enabled": true, "ttlSeconds": ttl_seconds}
    })
}

fn claims(idp: &TestIdp, sub: &str) -> Value {
    idp.claims(
        sub,
        AUDIENCE,
        json!({"roles": ["mcp-user"], "legacy_name": format!("{sub}_requestor")}),
    )
}

fn echo(tool: &str, token: String) -> Call {
    Call {
        tool: tool.to_owned(),
        token: Some(token),
        arguments: json!({"message": "m"}),
    }
}

fn ok(record: &Record) -> bool {
    matches!(record.outcome, Outcome::Ok(_))
}

#[test]
fn an_idp_outage_and_a_key_rotation_under_load() {
    let idp = Arc::new(TestIdp::start());
    for user in ["alice", "dave", "erin"] {
        idp.add_user(user, &format!("{user}_db"), &["sql-read"]);
    }
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({
        "auth": {"trustedIDPs": [
            {"name": "requestor-jwt", "issuer": idp.issuer, "audience": AUDIENCE,
             "jwksUri": idp.jwks_uri(), "roleMappings": {"user": ["mcp-user"]},
             "security": {"jwksRefreshCooldownSeconds": 1}},
            {"name": "sql-delegation-te-jwt", "issuer": idp.issuer, "audience": DB_AUDIENCE,
             "jwksUri": idp.jwks_uri(), "security": {"jwksRefreshCooldownSeconds": 1}}
        ]},
        "delegation": {"modules": {
            "echo1": {"tokenExchange": exchange(&idp, 60)},
            "echo2": {},
            "echo3": {"tokenExchange": exchange(&idp, 2)}
        }}
    });
    let host = Host::start(&config, plugins.path());
    let url = host.mcp_url();
    let alice = idp.key().sign(&claims(&idp, "alice"));
    let dave = idp.key().sign(&claims(&idp, "dave"));
    // The key rotated in later, and whether its client has started.
    let rotated: Arc<std::sync::OnceLock<SigningKey>> = Arc::default();
    let fresh = Arc::new(AtomicU64::new(0));
    let load = {
        let (idp, rotated, fresh) = (idp.clone(), rotated.clone(), fresh.clone());
        Load::start(&url, 4, Duration::from_millis(10), move |client, _| {
            match client {
                // Verified and exchanged before the outage (cache 60 s).
                0 => echo("echo1-echo", alice.clone()),
                // Exchanged before the outage, cached for 2 s only.
                1 => echo("echo3-echo", dave.clone()),
                // A new token under the known key on every call.
                2 => {
                    let n = fresh.fetch_add(1, Ordering::Relaxed);
                    echo(
                        "echo2-echo",
                        idp.key().sign(&claims(&idp, &format!("fresh-{n}"))),
                    )
                }
                // Tokens under the rotated key, once there is one.
                _ => match rotated.get() {
                    Some(key) => {
                        let n = fresh.fetch_add(1, Ordering::Relaxed);
                        echo(
                            "echo2-echo",
                            key.sign(&claims(&idp, &format!("rotated-{n}"))),
                        )
                    }
                    None => echo("echo2-echo", idp.key().sign(&claims(&idp, "waiting"))),
                },
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    let http = reqwest::blocking::Client::new();
    let unknown_key = idp.add_key("rsa-unknown", Algorithm::RS256);
    let unknown_key_token = unknown_key.sign(&claims(&idp, "carol"));
    let erin = idp.key().sign(&claims(&idp, "erin"));
    let outage_started = Instant::now();
    idp.set_down(true);
    std::thread::sleep(Duration::from_millis(500));
    // A token under a key the server has not seen: 503, not 401.
    let during_unknown = call_once(&http, &url, &echo("echo2-echo", unknown_key_token.clone()));
    // A user with no cached exchange: a clear tool error.
    let during_exchange = call_once(&http, &url, &echo("echo1-echo", erin.clone()));
    std::thread::sleep(Duration::from_millis(3500));
    idp.set_down(false);
    let outage_ended = Instant::now();
    // Recovery, by itself (the forced-refresh cool-down is 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let after_unknown = call_once(&http, &url, &echo("echo2-echo", unknown_key_token));
    let after_exchange = call_once(&http, &url, &echo("echo1-echo", erin));

    // A key rotation under load.
    std::thread::sleep(Duration::from_millis(1200));
    let rotation_at = Instant::now();
    let _ = rotated.set(idp.add_key("rsa-rotated", Algorithm::RS256));
    std::thread::sleep(Duration::from_secs(2));
    let records = load.finish();

    let of = |client: usize| -> Vec<&Record> {
        records
            .iter()
            .filter(|record| record.client == client)
            .collect()
    };
    let (cached, short, fresh_calls) = (of(0), of(1), of(2));
    let rotated_calls: Vec<&Record> = of(3)
        .into_iter()
        .filter(|record| record.start > rotation_at + Duration::from_millis(20))
        .collect();
    println!(
        "cached user {:?}; 2-second exchange cache {:?}; fresh tokens {:?}; rotated key {:?}",
        summary(&cached),
        summary(&short),
        summary(&fresh_calls),
        summary(&rotated_calls)
    );
    for record in cached.iter().chain(&fresh_calls).chain(&rotated_calls) {
        assert!(ok(record), "{}: {:?}", record.call.tool, record.outcome);
    }
    assert!(!rotated_calls.is_empty(), "no call used the rotated key");
    // The short-cached identity: served until its entry expired, then a
    // clear tool error until the IdP returned, then served again.
    let mut expired = 0;
    for record in &short {
        if let Some(code) = record.outcome.code() {
            expired += 1;
            assert_eq!(code, "TOKEN_EXCHANGE_FAILED", "{:?}", record.outcome);
            assert!(
                record.start >= outage_started && record.start < outage_ended,
                "a failure outside the outage: {:?}",
                record.outcome
            );
        }
    }
    assert!(
        expired > 0,
        "the 2-second exchange cache outlived a 4-second outage"
    );
    assert!(
        short
            .iter()
            .filter(|record| record.start >= outage_ended + Duration::from_secs(1))
            .all(|record| ok(record)),
        "the short-cached user did not recover"
    );
    match during_unknown {
        Outcome::Failed(text) => assert!(
            text.starts_with("HTTP 503") && text.contains("temporarily_unavailable"),
            "{text}"
        ),
        other => panic!("a token under an unknown key during the outage: {other:?}"),
    }
    assert_eq!(
        during_exchange.code(),
        Some("TOKEN_EXCHANGE_FAILED"),
        "{during_exchange:?}"
    );
    assert!(matches!(after_unknown, Outcome::Ok(_)), "{after_unknown:?}");
    assert!(
        matches!(after_exchange, Outcome::Ok(_)),
        "{after_exchange:?}"
    );
}
