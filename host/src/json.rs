//! JSON text that is known to be valid, carried without building a tree.
//!
//! A plugin's result is parsed once to check it (no allocation per value)
//! and then streamed into the response as it is, from the plugin's own
//! string: encoding rows to JSON is the plugin's job, and the host must not
//! do it, or copy it, a second time.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;

/// Checks that `body` is one JSON value that a full parse would accept
/// (see [`mcp_delegate_plugin_api::json_text::check`]).
pub fn check_strict(body: &[u8]) -> Result<(), serde_json::Error> {
    mcp_delegate_plugin_api::json_text::check(body)
}

/// The text of one JSON object, checked.
#[derive(Debug, Clone)]
pub struct RawJson(Text);

/// Where the text lives: a plugin's result stays in the string the plugin
/// returned (no copy of a result that may be megabytes).
#[derive(Clone)]
enum Text {
    Owned(String),
    Lent(Arc<dyn AsRef<str> + Send + Sync>),
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Text::Owned(text) => text.as_str(),
            Text::Lent(text) => (**text).as_ref(),
        };
        write!(f, "{} bytes of JSON", text.len())
    }
}

impl RawJson {
    /// Checks that `text` is exactly one JSON object.
    #[cfg(test)]
    pub fn object(text: String) -> Result<Self, String> {
        match checked_object(&text)? {
            Some(trimmed) => Ok(Self(Text::Owned(trimmed))),
            None => Ok(Self(Text::Owned(text))),
        }
    }

    /// Checks that `text` is exactly one JSON object, and keeps it where
    /// it is (a plugin's result string).
    pub fn lent_object(text: impl AsRef<str> + Send + Sync + 'static) -> Result<Self, String> {
        match checked_object(text.as_ref())? {
            Some(trimmed) => Ok(Self(Text::Owned(trimmed))),
            None => Ok(Self(Text::Lent(Arc::new(text)))),
        }
    }

    pub fn from_value(value: &Value) -> Self {
        Self(Text::Owned(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Text::Owned(text) => text,
            Text::Lent(text) => (**text).as_ref(),
        }
    }

    /// The tree, for callers that need one (the rmcp path); `Err` for
    /// text serde_json will not build a tree of (nested past 128 levels).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }
}

impl AsRef<[u8]> for RawJson {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

/// Checks that `text` is one JSON object; `Some` holds it without the
/// white space around it when there was some.
fn checked_object(text: &str) -> Result<Option<String>, String> {
    let raw: &RawValue = serde_json::from_str(text).map_err(|err| err.to_string())?;
    let trimmed = raw.get();
    if !trimmed.starts_with('{') {
        return Err("the result is not a JSON object".to_owned());
    }
    Ok((trimmed.len() != text.len()).then(|| trimmed.to_owned()))
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
