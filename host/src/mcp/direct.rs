//! The direct path for the one request that is hot: a plain, stateless
//! `tools/call`.
//!
//! rmcp serves each stateless request by building a whole service for it: a
//! spawned task, channels, cancellation tokens, the typed message parsed and
//! the result encoded through `serde_json::Value` twice. On a 2-core machine
//! those task hand-offs and allocations cost more than the database round
//! trip (see docs/benchmarks.md). So a request that is *only* a tools/call,
//! that rmcp would accept and answer as one JSON response, is answered here
//! through the same [`super::McpState::call_tool`] rmcp's handler uses, with
//! the plugin's JSON copied through untouched.
//!
//! The rule that keeps the two paths the same: [`recognize`] returns `None`
//! (hand the request to rmcp) for anything it is not sure rmcp would treat as
//! a plain tools/call: a batch, a notification, unknown keys, `_meta`
//! (progress tokens, per-request protocol versions), protocol version
//! 2026-07-28 and later, `Mcp-*` routing headers, an `Origin` header, a
//! `Host` outside the allow-list, or Accept/Content-Type values rmcp would
//! refuse. rmcp then answers, including every error. A test sends the same
//! calls both ways and compares the responses byte for byte.

use std::borrow::Cow;

use bytes::Bytes;
use http::header;
use rmcp::model::ProtocolVersion;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::ToolCallReply;

/// A `tools/call` the direct path will answer.
pub struct DirectCall<'a> {
    id: Value,
    pub name: Cow<'a, str>,
    /// The arguments object as the client sent it (`{}` when absent).
    pub args_json: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    jsonrpc: &'a str,
    id: Value,
    method: &'a str,
    #[serde(borrow)]
    params: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// The Host allow-list, parsed once, with rmcp's matching rule: same host
/// (case-insensitive, brackets stripped), and same port when one is listed.
pub struct HostAllowList(Vec<(String, Option<u16>)>);

fn normalize_host(host: &str) -> String {
    host.trim_matches('[')
        .trim_matches(']')
        .to_ascii_lowercase()
}

impl HostAllowList {
    pub fn new(allowed: &[String]) -> Self {
        let entries = allowed
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| match http::uri::Authority::try_from(entry) {
                Ok(authority) => (normalize_host(authority.host()), authority.port_u16()),
                Err(_) => (normalize_host(entry), None),
            })
            .collect();
        Self(entries)
    }

    /// True only when rmcp would surely let this Host in (rmcp refuses a
    /// request without a readable Host even when the list is empty).
    fn admits(&self, headers: &http::HeaderMap) -> bool {
        let Some(authority) = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| http::uri::Authority::try_from(value).ok())
        else {
            return false;
        };
        let host = normalize_host(authority.host());
        let port = authority.port_u16();
        self.0.is_empty()
            || self.0.iter().any(|(allowed, allowed_port)| {
                *allowed == host && allowed_port.is_none_or(|p| Some(p) == port)
            })
    }
}

/// A media type without its parameters: `application/json; charset=x` →
/// `application/json`.
fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

fn headers_are_plain(headers: &http::HeaderMap, hosts: &HostAllowList) -> bool {
    let accepts = |wanted: &str| {
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|item| essence(item).eq_ignore_ascii_case(wanted))
    };
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| essence(value).eq_ignore_ascii_case("application/json"));
    let legacy_version = match headers.get("mcp-protocol-version") {
        None => true,
        Some(value) => value.to_str().is_ok_and(|version| {
            version < ProtocolVersion::V_2026_07_28.as_str()
                && ProtocolVersion::KNOWN_VERSIONS
                    .iter()
                    .any(|known| known.as_str() == version)
        }),
    };
    let routing_headers = headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("mcp-") && name != "mcp-protocol-version"
    });
    accepts("application/json")
        && accepts("text/event-stream")
        && json_body
        && legacy_version
        && !routing_headers
        && !headers.contains_key(header::ORIGIN)
        && hosts.admits(headers)
}

/// The call in `body`, when the direct path may answer it.
pub fn recognize<'a>(
    headers: &http::HeaderMap,
    body: &'a [u8],
    hosts: &HostAllowList,
) -> Option<DirectCall<'a>> {
    // A struct deserializes from an array too (its fields in order): only
    // an object is a message, and only an object is a tool's params.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let envelope: Envelope<'a> = serde_json::from_slice(body).ok()?;
    if !envelope.params.get().starts_with('{') {
        return None;
    }
    if envelope.jsonrpc != "2.0" || envelope.method != "tools/call" {
        return None;
    }
    let id_ok = envelope.id.is_string() || envelope.id.as_i64().is_some();
    if !id_ok || !headers_are_plain(headers, hosts) {
        return None;
    }
    let params: Params<'a> = serde_json::from_str(envelope.params.get()).ok()?;
    let args_json = match params.arguments {
        None => "{}",
        Some(raw) if raw.get().starts_with('{') => raw.get(),
        Some(_) => return None,
    };
    Some(DirectCall {
        id: envelope.id,
        name: params.name,
        args_json,
    })
}

/// Appends `text` as a JSON string.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The JSON-RPC response body rmcp would send for `reply`.
pub fn encode(call: &DirectCall<'_>, reply: &ToolCallReply) -> Bytes {
    let mut out = Vec::with_capacity(match reply {
        ToolCallReply::Completed(Ok(raw)) => raw.as_str().len() * 2 + 128,
        _ => 256,
    });
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    let _ = serde_json::to_writer(&mut out, &call.id);
    match reply {
        ToolCallReply::UnknownTool => {
            out.extend_from_slice(b",\"error\":{\"code\":-32602,\"message\":");
            push_json_string(&mut out, &format!("Unknown tool: {}", call.name));
            out.extend_from_slice(b"}}");
        }
        ToolCallReply::Completed(Ok(raw)) => {
            out.extend_from_slice(b",\"result\":{\"content\":[{\"type\":\"text\",\"text\":");
            push_json_string(&mut out, raw.as_str());
            out.extend_from_slice(b"}],\"structuredContent\":");
            out.extend_from_slice(raw.as_str().as_bytes());
            out.extend_from_slice(b",\"isError\":false}}");
        }
        ToolCallReply::Completed(Err(error)) => {
            out.extend_from_slice(b",\"result\":{\"content\":[{\"type\":\"text\",\"text\":");
            push_json_string(&mut out, &error.to_json());
            out.extend_from_slice(b"}],\"isError\":true}}");
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_headers() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(
            header::ACCEPT,
            "application/json, text/event-stream".parse().unwrap(),
        );
        headers
    }

    fn hosts() -> HostAllowList {
        HostAllowList::new(&["localhost".into(), "127.0.0.1".into(), "::1".into()])
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sql1-delegate","arguments":{"sql":"SELECT 1"}}}"#;

    #[test]
    fn recognizes_a_plain_call() {
        let call = recognize(&plain_headers(), CALL.as_bytes(), &hosts()).unwrap();
        assert_eq!(call.name, "sql1-delegate");
        assert_eq!(call.args_json, r#"{"sql":"SELECT 1"}"#);
    }

    #[test]
    fn leaves_everything_else_to_rmcp() {
        let h = plain_headers();
        let no = |body: &str, headers: &http::HeaderMap| {
            assert!(
                recognize(headers, body.as_bytes(), &hosts()).is_none(),
                "{body}"
            );
        };
        no(&format!("[{CALL}]"), &h);
        no(&CALL.replace("tools/call", "tools/list"), &h);
        no(&CALL.replace("\"id\":7", "\"id\":1.5"), &h);
        no(&CALL.replace("\"id\":7,", ""), &h);
        no(
            &CALL.replace(
                "\"arguments\"",
                "\"_meta\":{\"progressToken\":1},\"arguments\"",
            ),
            &h,
        );
        no(&CALL.replace("{\"sql\":\"SELECT 1\"}", "[1]"), &h);
        no(&CALL.replace("\"2.0\"", "\"1.0\""), &h);
        no(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":["sql1-delegate"]}"#,
            &h,
        );
        no(
            r#"["2.0",7,"tools/call",{"name":"sql1-delegate","arguments":{}}]"#,
            &h,
        );
        for (name, value) in [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-protocol-version", "1999-01-01"),
            ("mcp-method", "tools/call"),
            ("mcp-session-id", "abc"),
            ("origin", "http://localhost"),
            ("host", "evil.example"),
            ("accept", "application/json"),
            ("content-type", "text/plain"),
        ] {
            let mut headers = h.clone();
            headers.insert(http::HeaderName::from_static(name), value.parse().unwrap());
            no(CALL, &headers);
        }
        let mut headers = h.clone();
        headers.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
        assert!(recognize(&headers, CALL.as_bytes(), &hosts()).is_some());
    }

    #[test]
    fn host_rule_matches_rmcps() {
        let list = HostAllowList::new(&["example.com:8080".into(), "LOCALHOST".into()]);
        let with_host = |host: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(header::HOST, host.parse().unwrap());
            list.admits(&headers)
        };
        assert!(with_host("localhost:1234"));
        assert!(with_host("example.com:8080"));
        assert!(!with_host("example.com:8081"));
        assert!(!with_host("example.com"));
        assert!(!HostAllowList::new(&[]).admits(&http::HeaderMap::new()));
    }
}
