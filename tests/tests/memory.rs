//! Memory is bounded, whatever the query: results past `maxResultBytes`
//! are cut (or refused) without being read into memory, statements past
//! `maxSqlTokens` are refused unparsed, caches are bounded in bytes, and
//! the host keeps serving. The peak resident memory of the
//! whole run must stay within `maxResultBytes` times the number of
//! concurrent calls plus a fixed overhead (measured: see docs/benchmarks.md).

use std::time::Instant;

use mcp_delegate_tests::host::{canary_checked, Host};
use mcp_delegate_tests::pgfixture::{rows, Delegated};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;
/// The module's `maxResultBytes` (its default).
const MAX_RESULT_BYTES: u64 = 16 * MIB;
/// Resident memory the host may use besides results: its binary, the
/// plugin, runtimes, pools, caches (measured idle at about 15 MiB).
const FIXED_OVERHEAD: u64 = 64 * MIB;

fn call(url: &str, token: &str, sql: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "sql1-delegate", "arguments": {"action": "query", "sql": sql}}});
    let response = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {token}"))
        .body(body.to_string())
        .send()
        .unwrap();
    let text = canary_checked(response.text().unwrap());
    let parsed: Value = serde_json::from_str(&text).unwrap();
    parsed["result"].clone()
}

/// Eight callers at once, each running `sql`; their results in order.
fn concurrently(url: &str, token: &str, sql: &'static str) -> Vec<Value> {
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, token) = (url.to_owned(), token.to_owned());
            std::thread::spawn(move || call(&url, &token, sql))
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect()
}

#[test]
fn no_query_makes_the_host_hold_more_than_its_result_budget() {
    let mut db =
        Delegated::start(json!({"pool": {"max": 10, "min": 0, "connectionTimeoutMillis": 10000}}));
    let reader = db.token("reader", &["sql-read"]);
    let url = db.host.mcp_url();
    assert_eq!(
        rows(&db.query_as(&reader, "SELECT 1 AS one", json!([]))),
        [json!({"one": 1})]
    );
    let idle = db.host.memory_kib("VmRSS");

    // One value far larger than the budget, twelve times: refused at the
    // first row's header, the statement cancelled.
    let started = Instant::now();
    for sql in [
        "SELECT repeat('x', 300000000) FROM generate_series(1, 12)",
        "SELECT repeat('x', 1000000000)",
    ] {
        let result = call(&url, &reader, sql);
        let error = Host::tool_error(&result);
        assert_eq!(error["error"], "RESULT_TOO_LARGE", "{sql}: {error}");
    }
    let refused_in = started.elapsed();

    // Eight concurrent 50 MB results: each cut at the budget.
    let started = Instant::now();
    let results = concurrently(
        &url,
        &reader,
        "SELECT repeat('x', 50000) AS filler FROM generate_series(1, 1000)",
    );
    for result in results {
        let structured = &result["structuredContent"];
        assert_eq!(
            structured["truncated"],
            true,
            "{}",
            &structured.to_string()[..200]
        );
        assert_eq!(structured["truncatedBy"], "bytes");
        let size = structured.to_string().len() as u64;
        assert!(size <= MAX_RESULT_BYTES, "{size} bytes");
        assert!(size > MAX_RESULT_BYTES - MIB, "{size} bytes: cut too early");
    }

    // Values that grow when written (a control character becomes six
    // bytes of JSON): judged by what they would grow to, before writing.
    let results = concurrently(
        &url,
        &reader,
        "SELECT x FROM (VALUES (1, ''), (2, repeat(chr(1), 16000000))) v(o, x) ORDER BY o",
    );
    for result in results {
        let structured = &result["structuredContent"];
        assert_eq!(structured["truncatedBy"], "bytes", "{result}");
        assert_eq!(structured["rowCount"], 1, "{result}");
    }
    let concurrent_in = started.elapsed();

    // 2,000 distinct 200 KB statements: the verdict and statement caches
    // stay bounded in bytes.
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (url, reader) = (url.clone(), reader.clone());
            std::thread::spawn(move || {
                for i in 0..500 {
                    let filler = format!("{t}-{i}-").repeat(200 * 1024 / 8);
                    let sql = format!("SELECT length($${filler}$$) AS n");
                    let result = call(&url, &reader, &sql);
                    assert_eq!(result["isError"], false, "{result}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    let distinct_in = started.elapsed();

    // Parsing costs about 2 KiB a token: dense statements past maxSqlTokens
    // are refused unparsed, and those just under it are parsed at most two
    // at a time.
    let started = Instant::now();
    let dense = format!("SELECT 1 AS one WHERE 1 IN ({}1)", "1,".repeat(1_000_000));
    let near_limit = format!("SELECT 1 AS one WHERE 1 IN ({}1)", "1,".repeat(4_900));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (url, reader) = (url.clone(), reader.clone());
            let sql = if i % 2 == 0 {
                dense.clone()
            } else {
                near_limit.clone()
            };
            std::thread::spawn(move || (i, call(&url, &reader, &sql)))
        })
        .collect();
    for thread in threads {
        let (i, result) = thread.join().unwrap();
        if i % 2 == 0 {
            assert_eq!(Host::tool_error(&result)["error"], "SQL_TOO_LARGE");
        } else {
            assert_eq!(result["isError"], false, "{result}");
        }
    }
    let dense_in = started.elapsed();

    // Still serving, on every pooled connection.
    for _ in 0..12 {
        assert_eq!(
            rows(&db.query_as(&reader, "SELECT current_user AS u", json!([]))),
            [json!({"u": "reader"})]
        );
    }
    let peak = db.host.memory_kib("VmHWM") * 1024;
    let now = db.host.memory_kib("VmRSS") * 1024;
    let bound = 8 * MAX_RESULT_BYTES + FIXED_OVERHEAD;
    println!(
        "host RSS: idle {} MiB, peak {} MiB, after {} MiB (bound {} MiB); \
         oversized values refused in {:.2} s, 8 concurrent cut in {:.2} s, \
         2,000 statements in {:.2} s, dense statements in {:.2} s",
        idle / 1024,
        peak / MIB,
        now / MIB,
        bound / MIB,
        refused_in.as_secs_f64(),
        concurrent_in.as_secs_f64(),
        distinct_in.as_secs_f64(),
        dense_in.as_secs_f64()
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB over {} MiB",
        peak / MIB,
        bound / MIB
    );
}
