//! The HTTP surface: bad input gets a stable answer and changes nothing.

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use serde_json::{json, Value};

fn echo_host(mcp: Value) -> (Host, tempfile::TempDir) {
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_echo")]);
    let config = json!({
        "delegation": {"modules": {"echo1": {}, "echo2": {}, "echo3": {}}},
        "mcp": mcp
    });
    (Host::start(&config, plugins.path()), plugins)
}

#[test]
fn malformed_and_oversized_requests_get_stable_errors() {
    let (mut host, _plugins) = echo_host(json!({"maxRequestBytes": 2048}));
    let (status, body) = host.post_raw("{not json");
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], -32700);

    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo1-echo", "arguments": {"message": "x".repeat(4096)}}});
    let (status, body) = host.post_raw(big.to_string());
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("mcp.maxRequestBytes"), "{body}");

    // Not JSON-RPC at all, and an unknown method.
    let (status, _) = host.post_raw(r#"{"hello": "world"}"#);
    assert!((400..500).contains(&status));
    let response = host.rpc("no/such/method", json!({}));
    assert_eq!(response["error"]["code"], -32601, "{response}");

    // Unknown tool: a JSON-RPC error, not a tool result.
    let response = host.rpc("tools/call", json!({"name": "nope", "arguments": {}}));
    assert_eq!(response["error"]["code"], -32602);

    // And the server still answers normally.
    let result = host.call_tool("echo1-echo", json!({"message": "still here"}));
    assert_eq!(result["structuredContent"]["message"], "still here");
    assert_eq!(
        result["content"][0]["text"]
            .as_str()
            .map(|t| serde_json::from_str::<Value>(t).unwrap()),
        Some(result["structuredContent"].clone())
    );
}

#[test]
fn foreign_origins_and_hosts_are_refused() {
    let (host, _plugins) = echo_host(json!({"allowedOrigins": ["https://app.example.com:443"]}));
    let post = |origin: Option<&str>, host_header: Option<&str>| {
        let mut request = host
            .http()
            .post(host.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(host_header) = host_header {
            request = request.header("host", host_header);
        }
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(post(None, None), 200);
    assert_eq!(post(Some("https://app.example.com"), None), 200);
    assert_eq!(post(Some("https://evil.example"), None), 403);
    assert_eq!(post(None, Some("evil.example")), 403);
}

#[test]
fn tools_list_is_sorted_and_paginated() {
    let (mut host, _plugins) = echo_host(json!({"toolsPageSize": 2}));
    let first = host.rpc("tools/list", json!({}));
    assert_eq!(first["result"]["tools"].as_array().unwrap().len(), 2);
    assert!(first["result"]["nextCursor"].is_string());
    let all = host.tool_names();
    assert_eq!(
        all,
        [
            "echo1-echo",
            "echo2-echo",
            "echo3-echo",
            "health-check",
            "user-info"
        ]
    );
    let response = host.rpc("tools/list", json!({"cursor": "garbage"}));
    assert_eq!(response["error"]["code"], -32602);
}

#[test]
fn health_ready_discover_and_unknown_paths() {
    let (host, _plugins) = echo_host(json!({}));
    assert_eq!(host.get("/health"), (200, json!({"status": "ok"})));
    let (status, ready) = host.get("/ready");
    assert_eq!(status, 200);
    assert_eq!(ready["modules"], json!(["echo1", "echo2", "echo3"]));
    assert_eq!(host.get("/nope").0, 404);

    // Protocol 2026-07-28: stateless, no initialize; every request carries
    // its version and capabilities, and the Mcp-Method/Mcp-Name headers
    // must agree with the body.
    let modern = |method: &str, name: Option<&str>, params: Value| {
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        });
        let mut request = host
            .http()
            .post(host.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        let response = request
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
            )
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (status, body) = modern("server/discover", None, json!({}));
    assert_eq!(status, 200, "{body}");
    let versions = body["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-06-18"),
        "{body}"
    );
    let call = json!({"name": "echo2-echo", "arguments": {"message": "modern"}});
    let (status, body) = modern("tools/call", Some("echo2-echo"), call.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["structuredContent"]["message"], "modern");
    let (status, body) = modern("tools/call", Some("echo3-echo"), call);
    assert_eq!(
        status, 400,
        "a contradicting Mcp-Name must be refused: {body}"
    );
}

/// The direct tools/call path (host/src/mcp/direct.rs) and rmcp's answer
/// the same call with the same bytes, in both protocol forms and with a
/// progress token. An unknown `_meta` key sends the second copy of each
/// call through rmcp.
#[test]
fn direct_tools_call_answers_exactly_like_rmcp() {
    let (host, _plugins) = echo_host(json!({}));
    // Long enough to be escaped in several pieces, with characters that
    // need escaping at the seams.
    let long: String = "é\"\\\n😀 ab\u{1}".repeat(20_000);
    let calls = [
        json!({"name": "echo1-echo", "arguments": {"message": "plain"}}),
        json!({"name": "echo2-echo", "arguments": {"message": "quotes \" slash \\ nl \n é 😀 \u{1}"}}),
        json!({"name": "echo1-echo", "arguments": {"message": long}}),
        json!({"name": "echo1-echo", "arguments": {}}),
        json!({"name": "echo1-echo"}),
        json!({"name": "no-such-tool", "arguments": {}}),
        json!({"name": "echo3-echo", "arguments": {"panic": true}}),
    ];
    let normalize = |body: &str| {
        // The request ids of the two calls differ: req-<prefix>-N.
        let mut out = String::new();
        let mut rest = body;
        while let Some(at) = rest.find("req-") {
            out.push_str(&rest[..at + 4]);
            rest = rest[at + 4..]
                .trim_start_matches(|c: char| c.is_ascii_hexdigit())
                .trim_start_matches('-')
                .trim_start_matches(|c: char| c.is_ascii_digit());
            out.push('N');
        }
        out.push_str(rest);
        out
    };
    let to_rmcp = json!({"x-test/route": "rmcp"});
    for (i, params) in calls.iter().enumerate() {
        // Legacy form: plain, with a progress token, and through rmcp.
        let direct = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params});
        let mut with_token = direct.clone();
        with_token["params"]["_meta"] = json!({"progressToken": format!("p{i}")});
        let mut via_rmcp = direct.clone();
        via_rmcp["params"]["_meta"] = to_rmcp.clone();
        let (status_direct, body_direct) = host.post_raw(direct.to_string());
        let (status_token, body_token) = host.post_raw(with_token.to_string());
        let (status_rmcp, body_rmcp) = host.post_raw(via_rmcp.to_string());
        assert_eq!(status_direct, status_rmcp, "{params}");
        assert_eq!(status_token, status_rmcp, "{params}");
        assert_eq!(normalize(&body_direct), normalize(&body_rmcp), "{params}");
        assert_eq!(normalize(&body_token), normalize(&body_rmcp), "{params}");
        let parsed: Value = serde_json::from_str(&body_direct).unwrap();
        assert_eq!(parsed["id"], i, "{body_direct}");
        // 2026-07-28 form.
        let (status_direct, body_direct) = host.post_modern_call(json!(i), params, json!({}));
        let (status_rmcp, body_rmcp) = host.post_modern_call(json!(i), params, to_rmcp.clone());
        assert_eq!(status_direct, status_rmcp, "{params}");
        assert_eq!(normalize(&body_direct), normalize(&body_rmcp), "{params}");
        if params["name"] != "no-such-tool" {
            assert!(
                body_direct.contains("\"resultType\":\"complete\""),
                "{body_direct}"
            );
        }
    }
    // A string id comes back as the same string.
    let (_, body) = host.post_raw(
        json!({"jsonrpc": "2.0", "id": "a\"b", "method": "tools/call",
               "params": {"name": "echo1-echo", "arguments": {"message": "x"}}})
        .to_string(),
    );
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["id"], "a\"b");
    assert_eq!(parsed["result"]["structuredContent"]["message"], "x");

    // Plain calls of both forms take the direct path, which streams any
    // result; the rmcp path holds results as trees and caps them.
    let big = json!({"name": "echo1-echo", "arguments": {"message": "x".repeat(2_300_000)}});
    let (_, direct) = host.post_modern_call(json!(1), &big, json!({}));
    let direct: Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(direct["result"]["isError"], false);
    let (_, via_rmcp) = host.post_modern_call(json!(1), &big, to_rmcp);
    let via_rmcp: Value = serde_json::from_str(&via_rmcp).unwrap();
    assert!(
        via_rmcp["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("RESULT_TOO_LARGE"),
        "{}",
        &via_rmcp.to_string()[..300]
    );
}

/// Bodies that are not valid JSON-RPC for a tool call get the same JSON-RPC
/// error whichever path they were headed for (a `_meta` key sends a call
/// to rmcp), and no tool runs for any of them.
#[test]
fn invalid_bodies_get_json_rpc_errors_on_both_paths_and_run_nothing() {
    let (host, _plugins) = echo_host(json!({}));
    let request_number = || {
        let (_, body) = host.post_raw(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "echo1-echo", "arguments": {"message": "count"}}})
            .to_string(),
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        let id = body["result"]["structuredContent"]["context"]["requestId"]
            .as_str()
            .unwrap()
            .to_owned();
        id.rsplit('-').next().unwrap().parse::<u64>().unwrap()
    };
    let before = request_number();
    // (direct form, rmcp form, expected code)
    let cases = [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo1-echo","arguments":{"message":"\ud800"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":1},"name":"echo1-echo","arguments":{"message":"\ud800"}}}"#,
            -32700,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo1-echo","arguments":{"message":"\udc00"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":1},"name":"echo1-echo","arguments":{"message":"\udc00"}}}"#,
            -32700,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo1-echo"]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo1-echo",{"_meta":{}}]}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo1-echo",{"message":"x"}]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo1-echo",{"message":"x"},{"progressToken":1}]}"#,
            -32602,
        ),
        (
            r#"["2.0",1,"tools/call",{"name":"echo1-echo","arguments":{"message":"x"}}]"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":1},"name":"echo1-echo","arguments":{"message":"x"}}}]"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo1-echo","arguments":{"n":1e999}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":1},"name":"echo1-echo","arguments":{"n":1e999}}}"#,
            -32700,
        ),
    ];
    for (direct, via_rmcp, code) in cases {
        let (status_direct, body_direct) = host.post_raw(direct);
        let (status_rmcp, body_rmcp) = host.post_raw(via_rmcp);
        assert_eq!(status_direct, 400, "{direct}: {body_direct}");
        assert_eq!(status_rmcp, 400, "{via_rmcp}: {body_rmcp}");
        let parsed: Value = serde_json::from_str(&body_direct).unwrap();
        assert_eq!(parsed["error"]["code"], code, "{direct}: {body_direct}");
        assert_eq!(parsed["jsonrpc"], "2.0");
        let parsed_rmcp: Value = serde_json::from_str(&body_rmcp).unwrap();
        assert_eq!(
            parsed_rmcp["error"]["code"], code,
            "{via_rmcp}: {body_rmcp}"
        );
    }
    // The exact bytes of one refusal, whichever form it came in.
    let (_, direct) = host.post_raw(cases[2].0);
    let (_, via_rmcp) = host.post_raw(cases[2].1);
    assert_eq!(direct, via_rmcp);
    assert_eq!(
        request_number(),
        before + 1,
        "a tool ran for an invalid body"
    );
}
