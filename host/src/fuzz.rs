//! Property tests over what clients and operators feed the host: request
//! bodies (the JSON-RPC envelope check and the direct path's recognizer)
//! and config files (the loader). No input may panic; the recognizer takes
//! nothing the envelope check refuses, and what it takes is a well-formed
//! call. A fixed seed and 2,000 cases per property in the suite;
//! `HOST_FUZZ_CASES` for longer runs by hand.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};

use crate::config::{load_file, SecretSource};
use crate::mcp::{direct, envelope};

fn runner() -> TestRunner {
    let cases = std::env::var("HOST_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_000);
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    )
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_$]{1,10}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sql1-delegate","arguments":{"action":"query","sql":"SELECT 1"},"_meta":{"progressToken":1}}}"#;

fn legacy_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", http::HeaderValue::from_static("localhost"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "accept",
        http::HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert(
        "mcp-protocol-version",
        http::HeaderValue::from_static("2025-06-18"),
    );
    headers
}

/// What the recognizer takes, the envelope check accepts, and its
/// arguments are one JSON object.
fn check_body(body: &[u8]) -> Result<(), TestCaseError> {
    let hosts = direct::HostAllowList::new(&["localhost".to_owned()]);
    let accepted = envelope::check(body).is_ok();
    if let Some(call) = direct::recognize(&legacy_headers(), body, &hosts) {
        prop_assert!(accepted, "the direct path took a body the envelope refuses");
        let arguments: Value = serde_json::from_str(call.args_json)
            .map_err(|err| TestCaseError::fail(format!("arguments not JSON: {err}")))?;
        prop_assert!(arguments.is_object());
    }
    Ok(())
}

#[test]
fn no_request_body_panics_and_the_direct_path_takes_only_what_the_envelope_accepts() {
    let mut runner = runner();
    // Arbitrary bytes.
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..200), |bytes| {
            check_body(&bytes)
        })
        .unwrap();
    // A valid call with bytes flipped, cut or inserted.
    let edits = prop::collection::vec((0..CALL.len(), any::<u8>(), 0..3u8), 1..6);
    runner
        .run(&edits, |edits| {
            let mut body = CALL.as_bytes().to_vec();
            for (at, byte, kind) in edits {
                let at = at.min(body.len().saturating_sub(1));
                match kind {
                    0 => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ => body.truncate(at),
                }
            }
            check_body(&body)
        })
        .unwrap();
    // Well-formed JSON of every shape in the params.
    runner
        .run(&json_value(), |params| {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
            check_body(body.to_string().as_bytes())
        })
        .unwrap();
}

#[test]
fn no_config_panics_the_loader_and_every_finding_has_a_path() {
    let dir = std::env::temp_dir().join(format!("mcpd-config-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    let sections = prop::collection::btree_map(
        prop_oneof![
            Just("auth".to_owned()),
            Just("delegation".to_owned()),
            Just("mcp".to_owned()),
            Just("plugins".to_owned()),
            Just("audit".to_owned()),
            "[a-z_]{1,8}".prop_map(String::from),
        ],
        json_value(),
        0..6,
    );
    let secrets = SecretSource {
        directory: dir.clone(),
    };
    runner()
        .run(&sections, |sections| {
            let config = Value::Object(sections.into_iter().collect());
            std::fs::write(&file, config.to_string()).unwrap();
            let (_, diagnostics) = load_file(&file, &secrets);
            for issue in diagnostics.errors.iter().chain(&diagnostics.warnings) {
                prop_assert!(!issue.message.is_empty());
            }
            Ok(())
        })
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
