//! Traces: a `tools/call` with a W3C `traceparent` (header, or `_meta` in
//! the 2026-07-28 form) becomes spans exported with OTLP/HTTP, received
//! here by a real OTLP/HTTP endpoint on loopback and decoded with
//! `opentelemetry-proto`: the MCP request is a child of the caller's span,
//! the plugin call a child of the request, the database batch a child of
//! the plugin call; the plugin gets the trace id.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use mcp_delegate_tests::pg::Cluster;
use mcp_delegate_tests::pgfixture::{auth_section, module_entry, FIXTURE_SQL};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

/// An OTLP/HTTP (protobuf) trace endpoint: keeps every span it receives.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    _server: Arc<tiny_http::Server>,
}

impl Collector {
    fn start() -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind collector"));
        let port = server.server_addr().to_ip().expect("ip").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (inbox, requests) = (spans.clone(), server.clone());
        std::thread::spawn(move || {
            for mut request in requests.incoming_requests() {
                let mut body = Vec::new();
                let _ = std::io::Read::read_to_end(request.as_reader(), &mut body);
                let status = if request.url() == "/v1/traces" {
                    match ExportTraceServiceRequest::decode(body.as_slice()) {
                        Ok(export) => {
                            let mut inbox = inbox.lock().unwrap();
                            for resource in export.resource_spans {
                                for scope in resource.scope_spans {
                                    inbox.extend(scope.spans);
                                }
                            }
                            200
                        }
                        Err(_) => 400,
                    }
                } else {
                    404
                };
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        Self {
            port,
            spans,
            _server: server,
        }
    }

    /// Waits until a span named `name` of trace `trace` arrived.
    fn await_span(&self, trace: &str, name: &str) -> Span {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(span) = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|span| hex(&span.trace_id) == trace && span.name == name)
            {
                return span.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no span {name:?} of trace {trace}; received: {:?}",
                self.spans
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|span| (span.name.clone(), hex(&span.trace_id)))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn a_traced_call_exports_the_request_plugin_call_and_database_batch_as_a_chain() {
    let collector = Collector::start();
    let cluster = Cluster::start();
    cluster.exec("postgres", FIXTURE_SQL);
    let idp = TestIdp::start();
    let plugins = plugin_dir(&[
        plugin_library("mcp_delegate_postgresql"),
        plugin_library("mcp_delegate_echo"),
    ]);
    let config = json!({
        "auth": auth_section(&idp),
        "delegation": {"modules": {
            "postgresql1": module_entry(&cluster, json!({})),
            "echo1": {}
        }}
    });
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    let mut host = Host::start_with_env(
        &config,
        plugins.path(),
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let token = idp.mint(
        "alice",
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"]}),
    );
    host.bearer = Some(token.clone());

    // The header form, on the direct path.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let response = host
        .http()
        .post(host.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", format!("Bearer {token}"))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "sql1-delegate",
                "arguments": {"action": "query", "sql": "SELECT count(*) FROM notes"}}})
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let request = collector.await_span(trace, "mcp tools/call");
    assert_eq!(hex(&request.parent_span_id), parent, "child of the caller");
    assert_eq!(request.kind, 2, "a server span");
    for step in ["authenticate", "delegated identity", "plugin call"] {
        let span = collector.await_span(trace, step);
        assert_eq!(
            span.parent_span_id, request.span_id,
            "{step} is a child of the request"
        );
        assert!(span.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= request.end_time_unix_nano);
    }
    let plugin_call = collector.await_span(trace, "plugin call");
    let batch = collector.await_span(trace, "database batch");
    assert_eq!(
        batch.parent_span_id, plugin_call.span_id,
        "the database batch is a child of the plugin call"
    );
    assert!(batch.end_time_unix_nano > batch.start_time_unix_nano);

    // The `_meta` form (2026-07-28): same chain, and the plugin sees the
    // trace id.
    let meta_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, body) = host.post_modern_call(
        json!(2),
        &json!({"name": "echo1-echo", "arguments": {"message": "traced"}}),
        json!({"traceparent": format!("00-{meta_trace}-b7ad6b7169203331-01")}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(meta_trace),
        "the plugin got the trace id: {body}"
    );
    let request = collector.await_span(meta_trace, "mcp tools/call");
    assert_eq!(hex(&request.parent_span_id), "b7ad6b7169203331");

    // Without a traceparent: a trace of its own.
    host.call_tool("echo1-echo", json!({"message": "untraced"}));
    let deadline = Instant::now() + Duration::from_secs(20);
    while collector
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|span| span.name == "mcp tools/call" && span.parent_span_id.is_empty())
        .count()
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "no root span for an untraced call"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
