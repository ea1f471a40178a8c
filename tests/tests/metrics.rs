//! Prometheus metrics on their own listener: what the three alerts of
//! docs/operations.md read (pool saturation, an auth failure surge, a
//! module down) is there after the condition is caused for real, and no
//! label carries what a caller made up.

use std::time::Duration;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::pg::{free_port, PgVersion};
use mcp_delegate_tests::pgfixture::Delegated;
use serde_json::{json, Value};

/// A series (name, labels) and the least value it must have.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// The value of the series `name{labels}` (every label given must match).
fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let Some(rest) = line.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|number| number.parse().ok())
}

fn scrape(port: u16) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .expect("scrape")
        .text()
        .expect("text")
}

#[test]
fn metrics_show_pool_saturation_auth_failures_and_a_module_down() {
    let metrics_port = free_port();
    let address = format!("127.0.0.1:{metrics_port}");
    let db = Delegated::start_full(
        PgVersion::V15,
        json!({"pool": {"max": 1, "min": 0, "idleTimeoutMillis": 30000, "connectionTimeoutMillis": 300}}),
        json!({}),
        &["--metrics-bind", &address],
    );
    // The plugin directory stays in `db` to the end: the reload below
    // reads it again.
    let Delegated {
        cluster,
        idp,
        mut host,
        ..
    } = db;
    let token = idp.mint(
        "alice",
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"]}),
    );
    host.bearer = Some(token.clone());
    let query = |host: &mut Host, sql: &str| -> Value {
        host.call_tool("sql1-delegate", json!({"action": "query", "sql": sql}))
    };
    assert_eq!(query(&mut host, "SELECT 1")["isError"], false);
    assert_eq!(query(&mut host, "SELECT 1/0")["isError"], true);
    let refused = query(&mut host, "SELECT query_to_xml('SELECT 1', true, true, '')");
    assert_eq!(refused["isError"], true);
    let made_up = host.rpc(
        "tools/call",
        json!({"name": "evil-made-up-tool-name", "arguments": {}}),
    );
    assert!(made_up.get("error").is_some());

    // Pool saturation: one connection, a slow call holding it, another
    // call that cannot get one.
    let url = host.mcp_url();
    let slow = {
        let (url, token) = (url.clone(), token.clone());
        std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("authorization", format!("Bearer {token}"))
                .body(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                    "name": "sql1-delegate",
                    "arguments": {"action": "query", "sql": "SELECT pg_sleep(3)"}}})
                    .to_string(),
                )
                .send()
                .expect("slow call")
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    let exhausted = query(&mut host, "SELECT 2");
    assert_eq!(
        Host::tool_error(&exhausted)["error"],
        "POOL_EXHAUSTED",
        "{exhausted}"
    );
    slow.join().unwrap();

    // An auth failure surge: bad tokens.
    for _ in 0..3 {
        let (status, _, _) = host.post_with_token(
            Some("not-a-token"),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
        );
        assert_eq!(status, 401);
    }

    // A module down: its database stopped.
    cluster.stop();
    let down = query(&mut host, "SELECT 3");
    assert_eq!(Host::tool_error(&down)["error"], "DATABASE_UNAVAILABLE");

    let metrics = scrape(metrics_port);
    let m = "postgresql1";
    let tool = "sql1-delegate";
    let checks: &[Expected] = &[
        (
            "mcpd_tool_calls_total",
            &[("module", m), ("tool", tool), ("outcome", "ok")],
            2.0,
        ),
        (
            "mcpd_tool_errors_total",
            &[("module", m), ("code", "POOL_EXHAUSTED")],
            1.0,
        ),
        (
            "mcpd_tool_errors_total",
            &[("module", m), ("code", "DATABASE_UNAVAILABLE")],
            1.0,
        ),
        ("mcpd_pool_timeouts_total", &[("module", m)], 1.0),
        (
            "mcpd_pool_connections",
            &[("module", m), ("state", "max")],
            1.0,
        ),
        (
            "mcpd_sql_refusals_total",
            &[("module", m), ("reason", "query-text")],
            1.0,
        ),
        (
            "mcpd_database_errors_total",
            &[("module", m), ("class", "22")],
            1.0,
        ),
        ("mcpd_auth_total", &[("outcome", "invalid_token")], 3.0),
        (
            "mcpd_tool_calls_total",
            &[("tool", "unknown"), ("outcome", "unknown-tool")],
            1.0,
        ),
        ("mcpd_module_up", &[("module", m)], 1.0),
        (
            "mcpd_cache_events_total",
            &[("cache", "verified"), ("event", "hit")],
            1.0,
        ),
        ("mcpd_build_info", &[], 1.0),
        ("mcpd_config_generation_info", &[], 1.0),
    ];
    for (name, labels, at_least) in checks {
        let found = value(&metrics, name, labels);
        assert!(
            found.is_some_and(|found| found >= *at_least),
            "{name}{labels:?}: {found:?}, expected at least {at_least}\n{metrics}"
        );
    }
    let histogram = value(
        &metrics,
        "mcpd_tool_call_duration_seconds_count",
        &[("module", m), ("tool", tool)],
    );
    assert!(histogram.is_some_and(|count| count >= 5.0), "{histogram:?}");
    assert!(
        !metrics.contains("evil-made-up-tool-name"),
        "a caller's tool name became a label"
    );
    assert!(!metrics.contains("not-a-token"));

    // Not on the public port.
    let (status, _) = host.get("/metrics");
    assert_eq!(status, 404);

    // A reload is counted, and the generation follows it.
    let before = value(&metrics, "mcpd_reloads_total", &[("result", "ok")]).unwrap_or(0.0);
    host.hang_up();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = scrape(metrics_port);
        if value(&now, "mcpd_reloads_total", &[("result", "ok")]).unwrap_or(0.0) > before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reload counted");
        std::thread::sleep(Duration::from_millis(50));
    }
}
