//! The direct path for the one request that is hot: a stateless
//! `tools/call`.
//!
//! rmcp serves each stateless request by building a whole service for it: a
//! spawned task, channels, cancellation tokens, the typed message parsed and
//! the result encoded through `serde_json::Value` twice. On a 2-core machine
//! those task hand-offs and allocations cost more than the database round
//! trip (see docs/benchmarks.md), and a result held as a tree of values
//! takes several times its size in memory. So a request that is *only* a
//! tools/call, that rmcp would accept and answer as one JSON response, is
//! answered here through the same call core rmcp's handler uses, with the
//! plugin's JSON streamed into the response from the plugin's own buffer
//! ([`ResultBody`]): a result costs its size once.
//!
//! Both protocol forms are taken: the legacy one (no protocol header, or a
//! version before 2026-07-28; `_meta` may carry only a progress token, for
//! which rmcp sends nothing either) and 2026-07-28 (`_meta` carries the
//! protocol version and client capabilities, and exactly one `Mcp-Method:
//! tools/call` and one plain `Mcp-Name` header agree with the body).
//!
//! The rule that keeps the two paths the same: [`recognize`] returns `None`
//! (hand the request to rmcp) for anything it is not sure rmcp would treat as
//! a plain tools/call: a batch, a notification, unknown keys (in the message,
//! its params or `_meta`), other protocol versions, `Mcp-Param-*` or other
//! routing headers, a Base64-encoded `Mcp-Name`, an `Origin` header, a `Host`
//! outside the allow-list, or Accept/Content-Type values rmcp would refuse.
//! rmcp then answers, including every error. A test sends the same calls
//! both ways and compares the responses byte for byte.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header;
use hyper::body::{Body, Frame, SizeHint};
use mcp_delegate_plugin_api::json_text::{escape_into, escaped_len};
use rmcp::model::ProtocolVersion;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::call::ToolCallReply;
use crate::json::RawJson;

/// A `tools/call` the direct path will answer.
pub struct DirectCall<'a> {
    id: Value,
    pub name: Cow<'a, str>,
    /// The arguments object as the client sent it (`{}` when absent).
    pub args_json: &'a str,
    /// Protocol 2026-07-28: the result says `"resultType":"complete"`.
    modern: bool,
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
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<Meta<'a>>,
}

/// The request metadata the direct path understands; any other key sends
/// the request to rmcp.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta<'a> {
    #[serde(rename = "progressToken", default)]
    progress_token: Option<Value>,
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities", borrow, default)]
    client_capabilities: Option<&'a RawValue>,
}

/// The 2026-07-28 protocol version, whose requests carry their version,
/// capabilities and routing headers.
const MODERN: &str = "2026-07-28";

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

/// Which protocol form the headers are in, if the direct path takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Legacy,
    Modern,
}

/// The one value of header `name`, if there is exactly one and it is text.
fn single_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    values.next().is_none().then_some(first)
}

fn plain_form(headers: &http::HeaderMap, hosts: &HostAllowList) -> Option<Form> {
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
    let form = match headers.get_all("mcp-protocol-version").iter().count() {
        0 => Form::Legacy,
        1 => match single_header(headers, "mcp-protocol-version")? {
            MODERN => Form::Modern,
            version
                if version < MODERN
                    && ProtocolVersion::KNOWN_VERSIONS
                        .iter()
                        .any(|known| known.as_str() == version) =>
            {
                Form::Legacy
            }
            _ => return None,
        },
        _ => return None,
    };
    let allowed_routing: &[&str] = match form {
        Form::Legacy => &["mcp-protocol-version"],
        Form::Modern => &["mcp-protocol-version", "mcp-method", "mcp-name"],
    };
    let routing_headers = headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("mcp-") && !allowed_routing.contains(&name)
    });
    let plain = accepts("application/json")
        && accepts("text/event-stream")
        && json_body
        && !routing_headers
        && !headers.contains_key(header::ORIGIN)
        && hosts.admits(headers);
    plain.then_some(form)
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
    if !id_ok {
        return None;
    }
    let form = plain_form(headers, hosts)?;
    let params: Params<'a> = serde_json::from_str(envelope.params.get()).ok()?;
    let meta_ok = match (&params.meta, form) {
        (None, Form::Legacy) => true,
        (Some(meta), Form::Legacy) => {
            meta.protocol_version.is_none() && meta.client_capabilities.is_none()
        }
        (Some(meta), Form::Modern) => {
            meta.protocol_version.as_deref() == Some(MODERN)
                && meta
                    .client_capabilities
                    .is_some_and(|caps| caps.get().starts_with('{'))
                && single_header(headers, "mcp-method") == Some("tools/call")
                && single_header(headers, "mcp-name").is_some_and(|name| {
                    !name.starts_with("=?base64?") && name == params.name.as_ref()
                })
        }
        (None, Form::Modern) => false,
    };
    let token_ok = params
        .meta
        .as_ref()
        .and_then(|meta| meta.progress_token.as_ref())
        .is_none_or(|token| token.is_string() || token.as_i64().is_some());
    if !meta_ok || !token_ok {
        return None;
    }
    let args_json = match params.arguments {
        None => "{}",
        Some(raw) if raw.get().starts_with('{') => raw.get(),
        Some(_) => return None,
    };
    Some(DirectCall {
        id: envelope.id,
        name: params.name,
        args_json,
        modern: form == Form::Modern,
    })
}

/// Appends `text` as a JSON string.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape_into(out, text);
    out.push(b'"');
}

/// How much of a result is escaped at a time into the response.
const ESCAPE_CHUNK: usize = 64 * 1024;

/// A piece of a response body.
enum Part {
    Ready(Bytes),
    /// The result as the text of a JSON string, escaped piece by piece.
    Escaped {
        raw: Arc<RawJson>,
        at: usize,
    },
}

/// A tool call's response body: the result appears twice (as the text
/// content, escaped, and as the structured content, as is), and neither
/// copy is built whole: the escaped one is made in small pieces as the
/// connection takes them, the other is the plugin's own buffer.
pub struct ResultBody {
    parts: VecDeque<Part>,
    remaining: u64,
}

/// A shared result as the bytes of a body frame (no copy).
struct SharedRaw(Arc<RawJson>);

impl AsRef<[u8]> for SharedRaw {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl ResultBody {
    fn new(parts: Vec<Part>) -> Self {
        let remaining = parts
            .iter()
            .map(|part| match part {
                Part::Ready(bytes) => bytes.len(),
                Part::Escaped { raw, .. } => escaped_len(raw.as_str().as_bytes()),
            })
            .sum::<usize>() as u64;
        Self {
            parts: parts.into(),
            remaining,
        }
    }

    fn whole(bytes: Vec<u8>) -> Self {
        Self::new(vec![Part::Ready(Bytes::from(bytes))])
    }
}

impl Body for ResultBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            let Some(part) = this.parts.front_mut() else {
                return Poll::Ready(None);
            };
            let chunk = match part {
                Part::Ready(bytes) => {
                    let bytes = std::mem::take(bytes);
                    this.parts.pop_front();
                    bytes
                }
                Part::Escaped { raw, at } => {
                    let text = raw.as_str();
                    if *at >= text.len() {
                        this.parts.pop_front();
                        continue;
                    }
                    let mut end = (*at + ESCAPE_CHUNK).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    let mut out = Vec::with_capacity(end - *at + 64);
                    escape_into(&mut out, &text[*at..end]);
                    *at = end;
                    Bytes::from(out)
                }
            };
            if chunk.is_empty() {
                continue;
            }
            this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The JSON-RPC response body rmcp would send for `reply`.
pub fn encode(call: &DirectCall<'_>, reply: ToolCallReply) -> ResultBody {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    let _ = serde_json::to_writer(&mut head, &call.id);
    let result_start: &[u8] = if call.modern {
        b",\"result\":{\"resultType\":\"complete\","
    } else {
        b",\"result\":{"
    };
    match reply {
        ToolCallReply::UnknownTool => {
            head.extend_from_slice(b",\"error\":{\"code\":-32602,\"message\":");
            push_json_string(&mut head, &format!("Unknown tool: {}", call.name));
            head.extend_from_slice(b"}}");
            ResultBody::whole(head)
        }
        ToolCallReply::Completed(Ok(raw)) => {
            head.extend_from_slice(result_start);
            head.extend_from_slice(b"\"content\":[{\"type\":\"text\",\"text\":\"");
            let raw = Arc::new(raw);
            ResultBody::new(vec![
                Part::Ready(Bytes::from(head)),
                Part::Escaped {
                    raw: raw.clone(),
                    at: 0,
                },
                Part::Ready(Bytes::from_static(b"\"}],\"structuredContent\":")),
                Part::Ready(Bytes::from_owner(SharedRaw(raw))),
                Part::Ready(Bytes::from_static(b",\"isError\":false}}")),
            ])
        }
        ToolCallReply::Completed(Err(error)) => {
            head.extend_from_slice(result_start);
            head.extend_from_slice(b"\"content\":[{\"type\":\"text\",\"text\":");
            push_json_string(&mut head, &error.to_json());
            head.extend_from_slice(b"}],\"isError\":true}}");
            ResultBody::whole(head)
        }
    }
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
                "\"_meta\":{\"progressToken\":1,\"x/route\":true},\"arguments\"",
            ),
            &h,
        );
        no(
            &CALL.replace(
                "\"arguments\"",
                "\"_meta\":{\"progressToken\":1.5},\"arguments\"",
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
        let with_token = CALL.replace(
            "\"arguments\"",
            "\"_meta\":{\"progressToken\":\"t\"},\"arguments\"",
        );
        assert!(recognize(&headers, with_token.as_bytes(), &hosts()).is_some());
    }

    #[test]
    fn takes_the_2026_07_28_form_only_when_headers_and_meta_agree() {
        let modern_call = CALL.replace(
            "\"arguments\"",
            "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\
             \"io.modelcontextprotocol/clientCapabilities\":{}},\"arguments\"",
        );
        let mut headers = plain_headers();
        headers.insert("mcp-protocol-version", "2026-07-28".parse().unwrap());
        headers.insert("mcp-method", "tools/call".parse().unwrap());
        headers.insert("mcp-name", "sql1-delegate".parse().unwrap());
        let call = recognize(&headers, modern_call.as_bytes(), &hosts()).unwrap();
        assert!(call.modern);
        let no = |body: &str, headers: &http::HeaderMap| {
            assert!(
                recognize(headers, body.as_bytes(), &hosts()).is_none(),
                "{body}"
            );
        };
        // No _meta, a _meta for another version, a legacy header.
        no(CALL, &headers);
        no(&modern_call.replace("2026-07-28", "2025-06-18"), &headers);
        let mut legacy = headers.clone();
        legacy.insert("mcp-protocol-version", "2025-06-18".parse().unwrap());
        no(&modern_call, &legacy);
        for (name, value) in [
            ("mcp-method", "tools/list"),
            ("mcp-name", "sql2-delegate"),
            ("mcp-name", "=?base64?c3FsMS1kZWxlZ2F0ZQ==?="),
            ("mcp-param-sql", "x"),
        ] {
            let mut wrong = headers.clone();
            wrong.insert(http::HeaderName::from_static(name), value.parse().unwrap());
            no(&modern_call, &wrong);
        }
        let mut twice = headers.clone();
        twice.append("mcp-method", "tools/call".parse().unwrap());
        no(&modern_call, &twice);
        let mut missing = headers.clone();
        missing.remove("mcp-name");
        no(&modern_call, &missing);
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
