//! The JSON-RPC envelope rule every `POST /mcp` body passes before either
//! MCP path (rmcp's or [`super::direct`]) sees it, so that both answer
//! invalid bodies with the same bytes and no tool ever runs for one.
//!
//! - The body is one JSON value that a full parse accepts (no lone
//!   surrogate escapes, valid UTF-8, numbers in range): else -32700.
//! - It is one JSON object: batches were removed from MCP and rmcp refuses
//!   them, as it refuses any other top-level value: else -32600.
//! - `params`, when present, is an object (MCP's methods take named
//!   parameters only; serde would read an array as the fields in order):
//!   else -32602.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Why a body was refused, as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("Parse error: the body is not valid JSON ({0})")]
    Parse(String),
    #[error("Invalid Request: {0}")]
    InvalidRequest(&'static str),
    #[error("Invalid params: 'params' must be an object")]
    ParamsNotObject { id: Value },
}

impl EnvelopeError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            EnvelopeError::Parse(_) => -32700,
            EnvelopeError::InvalidRequest(_) => -32600,
            EnvelopeError::ParamsNotObject { .. } => -32602,
        }
    }

    /// The request id to answer with (`null` when there is none to trust).
    pub fn id(&self) -> Value {
        match self {
            EnvelopeError::ParamsNotObject { id } => id.clone(),
            _ => Value::Null,
        }
    }
}

/// The parts of a message the rule looks at; other keys are rmcp's to judge.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

/// Applies the rule to a whole request body.
pub fn check(body: &[u8]) -> Result<(), EnvelopeError> {
    crate::json::check_strict(body).map_err(|err| EnvelopeError::Parse(err.to_string()))?;
    match body.trim_ascii_start().first() {
        Some(b'{') => {}
        Some(b'[') => {
            return Err(EnvelopeError::InvalidRequest(
                "JSON-RPC batches are not supported; send one message per request",
            ))
        }
        _ => {
            return Err(EnvelopeError::InvalidRequest(
                "the body must be one JSON-RPC message (a JSON object)",
            ))
        }
    }
    // Valid JSON and an object: this only fails on a duplicate `id` or
    // `params` key, which rmcp refuses too.
    let message: Message<'_> = serde_json::from_slice(body)
        .map_err(|_| EnvelopeError::InvalidRequest("duplicate keys in the message"))?;
    // `"params": null` is read by rmcp as no params.
    let params_ok = message
        .params
        .is_none_or(|raw| raw.get().starts_with('{') || raw.get() == "null");
    if params_ok {
        return Ok(());
    }
    Err(EnvelopeError::ParamsNotObject {
        id: message
            .id
            .filter(|id| id.is_string() || id.is_i64() || id.is_u64())
            .unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
        assert_eq!(check(call.as_bytes()), Ok(()));
        assert_eq!(
            check(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":null}"#),
            Ok(())
        );
        assert_eq!(check(br#"{"jsonrpc":"2.0","method":"ping"}"#), Ok(()));
        let surrogate = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sql1-delegate","arguments":{"sql":"\ud800"}}}"#;
        assert_eq!(check(surrogate.as_bytes()).unwrap_err().code(), -32700);
        let array =
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":["sql1-delegate"]}"#;
        let refused = check(array.as_bytes()).unwrap_err();
        assert_eq!((refused.code(), refused.id()), (-32602, Value::from("a")));
        assert_eq!(
            check(format!("[{call}]").as_bytes()).unwrap_err().code(),
            -32600
        );
        assert_eq!(
            check(br#"["2.0",1,"tools/call",{"name":"x"}]"#)
                .unwrap_err()
                .code(),
            -32600
        );
        assert_eq!(check(b"42").unwrap_err().code(), -32600);
        assert_eq!(
            check(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":3}"#)
                .unwrap_err()
                .code(),
            -32602
        );
    }
}
