//! Text-format column values to JSON, by PostgreSQL type.
//!
//! Results arrive in text format (see `wire`), so every type has a faithful
//! representation; this module decides which become JSON numbers, booleans,
//! objects or arrays. int8 and numeric stay strings (no precision loss),
//! timestamps become ISO 8601, bytea base64.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
#[cfg(test)]
use serde_json::{Number, Value};

/// How a type's text form maps to JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Bool,
    /// int2, int4, oid: exact in a JSON number.
    Integer,
    Float,
    /// int8, numeric: strings, to keep every digit.
    ExactString,
    Json,
    Bytea,
    Timestamp,
    TimestampTz,
    /// Arrays: element shape.
    Array(&'static Shape),
    Text,
}

/// A type: its name (for `columns[].type`) and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: String,
    pub shape: Shape,
}

const fn array_of(shape: &'static Shape) -> Shape {
    Shape::Array(shape)
}

static BOOL: Shape = Shape::Bool;
static INTEGER: Shape = Shape::Integer;
static FLOAT: Shape = Shape::Float;
static EXACT: Shape = Shape::ExactString;
static JSON: Shape = Shape::Json;
static BYTEA: Shape = Shape::Bytea;
static TIMESTAMP: Shape = Shape::Timestamp;
static TIMESTAMPTZ: Shape = Shape::TimestampTz;
static TEXT: Shape = Shape::Text;

/// Built-in types by OID (pg_type.dat); anything else is looked up once.
pub fn builtin(oid: u32) -> Option<(&'static str, Shape)> {
    Some(match oid {
        16 => ("bool", BOOL),
        17 => ("bytea", BYTEA),
        18 => ("char", TEXT),
        19 => ("name", TEXT),
        20 => ("int8", EXACT),
        21 => ("int2", INTEGER),
        23 => ("int4", INTEGER),
        25 => ("text", TEXT),
        26 => ("oid", INTEGER),
        114 => ("json", JSON),
        700 => ("float4", FLOAT),
        701 => ("float8", FLOAT),
        1042 => ("bpchar", TEXT),
        1043 => ("varchar", TEXT),
        1082 => ("date", TEXT),
        1083 => ("time", TEXT),
        1114 => ("timestamp", TIMESTAMP),
        1184 => ("timestamptz", TIMESTAMPTZ),
        1186 => ("interval", TEXT),
        1266 => ("timetz", TEXT),
        1700 => ("numeric", EXACT),
        2950 => ("uuid", TEXT),
        3802 => ("jsonb", JSON),
        1000 => ("_bool", array_of(&BOOL)),
        1001 => ("_bytea", array_of(&BYTEA)),
        1005 => ("_int2", array_of(&INTEGER)),
        1007 => ("_int4", array_of(&INTEGER)),
        1016 => ("_int8", array_of(&EXACT)),
        1009 => ("_text", array_of(&TEXT)),
        1014 => ("_bpchar", array_of(&TEXT)),
        1015 => ("_varchar", array_of(&TEXT)),
        1021 => ("_float4", array_of(&FLOAT)),
        1022 => ("_float8", array_of(&FLOAT)),
        1231 => ("_numeric", array_of(&EXACT)),
        1182 => ("_date", array_of(&TEXT)),
        1115 => ("_timestamp", array_of(&TIMESTAMP)),
        1185 => ("_timestamptz", array_of(&TIMESTAMPTZ)),
        2951 => ("_uuid", array_of(&TEXT)),
        199 => ("_json", array_of(&JSON)),
        3807 => ("_jsonb", array_of(&JSON)),
        _ => return None,
    })
}

/// Static shapes for element types of looked-up arrays.
pub fn static_shape(shape: Shape) -> &'static Shape {
    match shape {
        Shape::Bool => &BOOL,
        Shape::Integer => &INTEGER,
        Shape::Float => &FLOAT,
        Shape::ExactString => &EXACT,
        Shape::Json => &JSON,
        Shape::Bytea => &BYTEA,
        Shape::Timestamp => &TIMESTAMP,
        Shape::TimestampTz => &TIMESTAMPTZ,
        Shape::Array(_) | Shape::Text => &TEXT,
    }
}

/// Types seen on this instance's database, by OID (domains, enums, arrays
/// of them, extension types). Shared by the instance's connections.
#[derive(Default)]
pub struct TypeCache {
    known: Mutex<HashMap<u32, TypeInfo>>,
}

impl TypeCache {
    pub fn get(&self, oid: u32) -> Option<TypeInfo> {
        if let Some((name, shape)) = builtin(oid) {
            return Some(TypeInfo {
                name: name.to_owned(),
                shape,
            });
        }
        self.known.lock().ok()?.get(&oid).cloned()
    }

    pub fn insert(&self, oid: u32, info: TypeInfo) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(oid, info);
        }
    }
}

/// One value to JSON as a tree: the reference [`write_json`] is tested
/// against.
#[cfg(test)]
pub fn to_json(text: Option<&str>, shape: &Shape) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    match shape {
        Shape::Bool => Value::Bool(text == "t"),
        Shape::Integer => text
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Shape::Float => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            // NaN and ±Infinity have no JSON number.
            .unwrap_or_else(|| Value::String(text.to_owned())),
        Shape::ExactString | Shape::Text => Value::String(text.to_owned()),
        Shape::Json => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        Shape::Bytea => match text.strip_prefix("\\x").map(decode_hex) {
            Some(Some(bytes)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            _ => Value::String(text.to_owned()),
        },
        Shape::Timestamp => Value::String(iso_timestamp(text, false)),
        Shape::TimestampTz => Value::String(iso_timestamp(text, true)),
        Shape::Array(element) => parse_array(text)
            .map(|items| array_to_json(&items, element))
            .unwrap_or_else(|| Value::String(text.to_owned())),
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `2025-01-02 03:04:05.6+00` → `2025-01-02T03:04:05.6+00:00`.
fn iso_timestamp(text: &str, with_zone: bool) -> String {
    // 'infinity', '-infinity' and BC dates stay as PostgreSQL wrote them.
    if !text.as_bytes().first().is_some_and(u8::is_ascii_digit) || text.ends_with(" BC") {
        return text.to_owned();
    }
    let mut iso = text.replacen(' ', "T", 1);
    if with_zone {
        // Offsets come as +HH, +HH:MM or +HH:MM:SS; ISO 8601 wants +HH:MM.
        if let Some(sign) = iso.rfind(['+', '-']).filter(|&at| at > 10) {
            if iso.len() - sign == 3 {
                iso.push_str(":00");
            }
        }
    }
    iso
}

/// A parsed array literal: nested items, `None` for NULL.
#[cfg(test)]
#[derive(Debug, PartialEq)]
pub enum ArrayItem {
    Value(Option<String>),
    Nested(Vec<ArrayItem>),
}

#[cfg(test)]
fn array_to_json(items: &[ArrayItem], element: &Shape) -> Value {
    Value::Array(
        items
            .iter()
            .map(|item| match item {
                ArrayItem::Value(text) => to_json(text.as_deref(), element),
                ArrayItem::Nested(inner) => array_to_json(inner, element),
            })
            .collect(),
    )
}

/// Parses `{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}` and
/// `[0:1]={1,2}` (delimiter `,`).
#[cfg(test)]
pub fn parse_array(text: &str) -> Option<Vec<ArrayItem>> {
    let body = match text.find('=') {
        Some(at) if text.starts_with('[') => &text[at + 1..],
        _ => text,
    };
    let mut chars = body.chars().peekable();
    let items = parse_level(&mut chars)?;
    chars.next().is_none().then_some(items)
}

#[cfg(test)]
fn parse_level(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Vec<ArrayItem>> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(items);
    }
    loop {
        match chars.peek()? {
            '{' => items.push(ArrayItem::Nested(parse_level(chars)?)),
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        other => value.push(other),
                    }
                }
                items.push(ArrayItem::Value(Some(value)));
            }
            _ => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                let value = value.trim().to_owned();
                items.push(ArrayItem::Value((value != "NULL").then_some(value)));
            }
        }
        match chars.next()? {
            ',' => continue,
            '}' => return Some(items),
            _ => return None,
        }
    }
}

/// Appends `text` as a JSON string.
fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The deepest `json`/`jsonb` value copied into a result as JSON; deeper
/// ones are sent as their text (serde_json and most clients stop at 128
/// levels, and the value sits a few levels down in the response).
pub const MAX_JSON_DEPTH: usize = 100;

/// Appends one value as JSON: the same value `to_json` gives, without
/// building a tree (a JSON value is copied minified, an array written as it
/// is parsed), so a value never costs more than its own output.
pub fn write_json(out: &mut Vec<u8>, text: Option<&str>, shape: &Shape) {
    let Some(text) = text else {
        out.extend_from_slice(b"null");
        return;
    };
    match shape {
        Shape::Bool => out.extend_from_slice(if text == "t" { b"true" } else { b"false" }),
        Shape::Integer => match text.parse::<i64>() {
            Ok(number) => {
                let _ = serde_json::to_writer(&mut *out, &number);
            }
            Err(_) => write_str(out, text),
        },
        Shape::Float => match text.parse::<f64>().ok().filter(|f| f.is_finite()) {
            Some(number) => {
                let _ = serde_json::to_writer(&mut *out, &number);
            }
            None => write_str(out, text),
        },
        Shape::ExactString | Shape::Text => write_str(out, text),
        Shape::Timestamp => write_str(out, &iso_timestamp(text, false)),
        Shape::TimestampTz => write_str(out, &iso_timestamp(text, true)),
        Shape::Json => {
            // Copied as JSON unless it nests so deeply that the result, a
            // few levels further down in the response, would pass the
            // depth clients (and serde_json) read: then it is text.
            if mcp_delegate_plugin_api::json_text::depth(text) <= MAX_JSON_DEPTH
                && mcp_delegate_plugin_api::json_text::is_valid(text)
            {
                mcp_delegate_plugin_api::json_text::write_minified(out, text);
            } else {
                write_str(out, text);
            }
        }
        Shape::Bytea => match text.strip_prefix("\\x").map(decode_hex) {
            Some(Some(bytes)) => write_str(
                out,
                &base64::engine::general_purpose::STANDARD.encode(bytes),
            ),
            _ => write_str(out, text),
        },
        Shape::Array(element) => {
            let mark = out.len();
            if write_array(out, text, element).is_none() {
                out.truncate(mark);
                write_str(out, text);
            }
        }
    }
}

/// Writes the array literal `text` (`{1,2,NULL}`, `{"a b","c\"d"}`,
/// `{{1,2},{3,4}}`, `[0:1]={1,2}`) as a JSON array as it parses it;
/// `None` (with partial output) when it is not one.
fn write_array(out: &mut Vec<u8>, text: &str, element: &Shape) -> Option<()> {
    let body = match text.find('=') {
        Some(at) if text.starts_with('[') => &text[at + 1..],
        _ => text,
    };
    let mut chars = body.chars().peekable();
    let mut item = String::new();
    write_array_level(out, &mut chars, element, &mut item)?;
    chars.next().is_none().then_some(())
}

fn write_array_level(
    out: &mut Vec<u8>,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    element: &Shape,
    item: &mut String,
) -> Option<()> {
    if chars.next()? != '{' {
        return None;
    }
    out.push(b'[');
    if chars.peek() == Some(&'}') {
        chars.next();
        out.push(b']');
        return Some(());
    }
    let mut first = true;
    loop {
        if !first {
            out.push(b',');
        }
        first = false;
        match chars.peek()? {
            '{' => write_array_level(out, chars, element, item)?,
            '"' => {
                chars.next();
                item.clear();
                loop {
                    match chars.next()? {
                        '\\' => item.push(chars.next()?),
                        '"' => break,
                        other => item.push(other),
                    }
                }
                write_json(out, Some(item), element);
            }
            _ => {
                item.clear();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    item.push(c);
                    chars.next();
                }
                let value = item.trim();
                if value == "NULL" {
                    out.extend_from_slice(b"null");
                } else {
                    write_json(out, Some(value), element);
                }
            }
        }
        match chars.next()? {
            ',' => continue,
            '}' => {
                out.push(b']');
                return Some(());
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars() {
        assert_eq!(to_json(Some("t"), &Shape::Bool), json!(true));
        assert_eq!(to_json(Some("42"), &Shape::Integer), json!(42));
        assert_eq!(
            to_json(Some("9007199254740993"), &Shape::ExactString),
            json!("9007199254740993")
        );
        assert_eq!(to_json(Some("NaN"), &Shape::Float), json!("NaN"));
        assert_eq!(to_json(Some("1.5"), &Shape::Float), json!(1.5));
        assert_eq!(to_json(Some("\\x0102ff"), &Shape::Bytea), json!("AQL/"));
        assert_eq!(
            to_json(Some("{\"a\": [1]}"), &Shape::Json),
            json!({"a": [1]})
        );
        assert_eq!(
            to_json(Some("2025-01-02 03:04:05.5+00"), &Shape::TimestampTz),
            json!("2025-01-02T03:04:05.5+00:00")
        );
        assert_eq!(
            to_json(Some("2025-01-02 03:04:05+05:30"), &Shape::TimestampTz),
            json!("2025-01-02T03:04:05+05:30")
        );
        assert_eq!(
            to_json(Some("infinity"), &Shape::Timestamp),
            json!("infinity")
        );
        assert_eq!(to_json(None, &Shape::Text), Value::Null);
    }

    /// Every value written straight to JSON text is the value `to_json`
    /// builds (a JSON value's number text is kept as written, so the
    /// comparison is on the parsed result).
    #[test]
    fn written_values_match_the_value_tree() {
        let cases: Vec<(Option<&str>, Shape)> = vec![
            (Some("1"), Shape::Integer),
            (Some("x"), Shape::Integer),
            (Some("quote \" nl \n é 😀 \u{1}"), Shape::Text),
            (Some("12345678901234567890.5"), Shape::ExactString),
            (Some("2025-01-02 03:04:05.5+00"), Shape::TimestampTz),
            (Some("infinity"), Shape::TimestampTz),
            (Some("1.5e300"), Shape::Float),
            (Some("NaN"), Shape::Float),
            (Some("-0"), Shape::Float),
            (
                Some("{\"a\": [1, {\"b\": null}], \"c\" : \"x y\"}"),
                Shape::Json,
            ),
            (Some(" [ 1 ,\n 2 ] "), Shape::Json),
            (Some("not json"), Shape::Json),
            (Some("{\"lone\": \"\\ud800\"}"), Shape::Json),
            (Some("{1,NULL,3}"), Shape::Array(&INTEGER)),
            (Some(r#"{"a b","c\"d",NULL,"NULL"}"#), Shape::Array(&TEXT)),
            (Some("{{1,2},{3,4}}"), Shape::Array(&INTEGER)),
            (Some("[0:1]={7,8}"), Shape::Array(&INTEGER)),
            (Some("{}"), Shape::Array(&INTEGER)),
            (Some("{1,2"), Shape::Array(&INTEGER)),
            (Some("\\x0102ff"), Shape::Bytea),
            (Some("t"), Shape::Bool),
            (None, Shape::Text),
        ];
        for (text, shape) in cases {
            let mut written = Vec::new();
            write_json(&mut written, text, &shape);
            let parsed: Value = serde_json::from_slice(&written).unwrap_or_else(|err| {
                panic!("{text:?}: {err}: {:?}", String::from_utf8_lossy(&written))
            });
            assert_eq!(parsed, to_json(text, &shape), "{text:?}");
        }
        let mut written = Vec::new();
        write_json(&mut written, Some(" {\"a\" : [1, 2.50]} "), &Shape::Json);
        assert_eq!(written, br#"{"a":[1,2.50]}"#);
    }

    #[test]
    fn json_nested_too_deeply_for_clients_is_sent_as_text() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let mut shallow = Vec::new();
        write_json(&mut shallow, Some(&nested(MAX_JSON_DEPTH)), &Shape::Json);
        assert!(shallow.starts_with(b"[["), "copied as JSON");
        let mut deep = Vec::new();
        write_json(&mut deep, Some(&nested(MAX_JSON_DEPTH + 1)), &Shape::Json);
        assert!(deep.starts_with(b"\"[["), "sent as text");
    }

    #[test]
    fn arrays() {
        assert_eq!(
            to_json(Some("{1,2,NULL}"), &Shape::Array(&INTEGER)),
            json!([1, 2, null])
        );
        assert_eq!(
            to_json(Some(r#"{"a b","c\"d",NULL,"NULL"}"#), &Shape::Array(&TEXT)),
            json!(["a b", "c\"d", null, "NULL"])
        );
        assert_eq!(
            to_json(Some("{{1,2},{3,4}}"), &Shape::Array(&INTEGER)),
            json!([[1, 2], [3, 4]])
        );
        assert_eq!(
            to_json(Some("[0:1]={7,8}"), &Shape::Array(&INTEGER)),
            json!([7, 8])
        );
        assert_eq!(to_json(Some("{}"), &Shape::Array(&INTEGER)), json!([]));
    }
}
