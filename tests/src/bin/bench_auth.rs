//! Benchmark: what the verified-token cache saves. Starts the test IdP and
//! the real host (release build) with the echo plugin, then measures
//! `tools/call user-info` throughput when every call reuses one token (cache
//! warm: no signature verification) against every call bringing a token the
//! server has not seen (cache cold: RS256 verification each call).
//!
//! Run: `cargo build --release --workspace && target/release/mcp-delegate-bench-auth`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::paths;
use serde_json::json;

const CALLS_PER_RUN: usize = 2_000;
const REPEATS: usize = 3;
const CONCURRENCY: [usize; 2] = [1, 4];
/// Every cold-cache call gets a token nobody used before.
const FRESH_TOKENS: usize = CALLS_PER_RUN * REPEATS * CONCURRENCY.len();

fn call_body() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "user-info", "arguments": {}}})
    .to_string()
}

/// Calls per second for [`CALLS_PER_RUN`] calls over `clients` threads;
/// `token_for(i)` gives the token of the i-th call.
fn measure(
    url: &str,
    clients: usize,
    token_for: Arc<dyn Fn(usize) -> String + Send + Sync>,
) -> f64 {
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let counter = counter.clone();
            let token_for = token_for.clone();
            let url = url.to_owned();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let body = call_body();
                let mut done = 0usize;
                loop {
                    let index = counter.fetch_add(1, Ordering::Relaxed);
                    if index >= CALLS_PER_RUN {
                        break;
                    }
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("accept", "application/json, text/event-stream")
                        .header("mcp-protocol-version", "2025-06-18")
                        .header("authorization", format!("Bearer {}", token_for(index)))
                        .body(body.clone())
                        .send()
                        .expect("request");
                    assert_eq!(response.status().as_u16(), 200);
                    let _ = response.bytes();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().expect("client")).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let idp = TestIdp::start();
    let config = json!({
        "auth": {"trustedIDPs": [{"name": "requestor-jwt", "issuer": idp.issuer,
            "audience": "mcp-oauth", "jwksUri": idp.jwks_uri()}]},
        "delegation": {"modules": {"echo": {}}}
    });
    let mut host = Host::start_with(&config, &paths::build_dir(), &[]);
    let url = host.mcp_url();
    let warm_token = idp.mint("bench", "mcp-oauth", json!({"roles": ["user"]}));
    host.bearer = Some(warm_token.clone());
    host.call_tool("user-info", json!({}));

    eprintln!("minting {FRESH_TOKENS} distinct tokens...");
    let fresh: Arc<Vec<String>> = Arc::new(
        (0..FRESH_TOKENS)
            .map(|i| {
                idp.mint(
                    "bench",
                    "mcp-oauth",
                    json!({"roles": ["user"], "jti": format!("bench-{i}")}),
                )
            })
            .collect(),
    );
    let machine = mcp_delegate_tests::bench::machine_description();
    println!("## Verified-token cache (user-info over HTTP, RS256)\n");
    println!("Machine: {machine}. {REPEATS} runs of {CALLS_PER_RUN} calls each; medians.\n");
    println!("| clients | same token (cache warm) calls/s | new token per call (cache cold) calls/s | ratio |");
    println!("| --- | --- | --- | --- |");
    let mut fresh_offset = 0usize;
    for clients in CONCURRENCY {
        let mut warm = Vec::new();
        let mut cold = Vec::new();
        for _ in 0..REPEATS {
            let token = warm_token.clone();
            warm.push(measure(&url, clients, Arc::new(move |_| token.clone())));
            let tokens = fresh.clone();
            let offset = fresh_offset;
            cold.push(measure(
                &url,
                clients,
                Arc::new(move |i| tokens[offset + i].clone()),
            ));
            fresh_offset += CALLS_PER_RUN;
        }
        let (warm, cold) = (median(warm), median(cold));
        println!(
            "| {clients} | {warm:.0} | {cold:.0} | {:.2}x |",
            warm / cold
        );
    }
}
