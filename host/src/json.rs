//! JSON text that is known to be valid, carried without building a tree.
//!
//! A plugin's result is parsed once to check it (no allocation per value)
//! and then copied into the response as it is: encoding rows to JSON is
//! the plugin's job, and the host must not do it a second time.

use serde_json::value::RawValue;
use serde_json::Value;

/// Checks that `body` is one JSON value that a full parse would accept
/// (see [`mcp_delegate_plugin_api::json_text::check`]).
pub fn check_strict(body: &[u8]) -> Result<(), serde_json::Error> {
    mcp_delegate_plugin_api::json_text::check(body)
}

/// The text of one JSON object, checked.
#[derive(Debug, Clone)]
pub struct RawJson(String);

impl RawJson {
    /// Checks that `text` is exactly one JSON object.
    pub fn object(text: String) -> Result<Self, String> {
        let raw: &RawValue = serde_json::from_str(&text).map_err(|err| err.to_string())?;
        let trimmed = raw.get();
        if !trimmed.starts_with('{') {
            return Err("the result is not a JSON object".to_owned());
        }
        if trimmed.len() == text.len() {
            Ok(Self(text))
        } else {
            Ok(Self(trimmed.to_owned()))
        }
    }

    pub fn from_value(value: &Value) -> Self {
        Self(value.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tree, for callers that need one (the rmcp path).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_only() {
        assert_eq!(
            RawJson::object(" {\"a\": 1} ".into()).unwrap().as_str(),
            "{\"a\": 1}"
        );
        assert!(RawJson::object("[1]".into()).is_err());
        assert!(RawJson::object("{\"a\": }".into()).is_err());
        assert!(RawJson::object("{} {}".into()).is_err());
    }
}
