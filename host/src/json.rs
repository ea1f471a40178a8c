//! JSON text that is known to be valid, carried without building a tree.
//!
//! A plugin's result is parsed once to check it (no allocation per value)
//! and then copied into the response as it is: encoding rows to JSON is
//! the plugin's job, and the host must not do it a second time.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// Checks that `body` is one JSON value that a full parse would accept:
/// valid UTF-8, no lone surrogate escapes (`"\ud800"`), numbers in range.
/// `serde::de::IgnoredAny` and `RawValue` skip strings without decoding
/// them, so they let such bodies through; this decodes every string and
/// number (into serde_json's reusable scratch buffer) but builds no tree.
pub fn check_strict(body: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Strict>(body).map(|_| ())
}

/// A JSON value, decoded and dropped.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        // Keys are strings: decoding them as `Strict` checks their escapes.
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
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
    fn strict_check_refuses_what_a_full_parse_refuses() {
        for bad in [
            &b"{\"a\":\"\\ud800\"}"[..],
            b"\"\\udc00 lone low\"",
            b"{\"\\ud800\":1}",
            b"\"a\xffb\"",
            b"[1e999]",
            b"[1,]",
            b"{\"a\":1} x",
        ] {
            assert!(
                check_strict(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                serde_json::from_slice::<Value>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"{\"a\":\"\\ud83d\\ude00 \\u00e9\",\"b\":[1,-2.5e3,null,true]}"[..],
            b"{\"a\":1,\"a\":2}",
            "\"é 😀\"".as_bytes(),
        ] {
            assert!(
                check_strict(good).is_ok(),
                "{}",
                String::from_utf8_lossy(good)
            );
        }
    }

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
