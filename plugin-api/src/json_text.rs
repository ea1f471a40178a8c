//! JSON text checked and copied without building a tree: the host checks
//! request bodies with it, the PostgreSQL module copies `json` values into
//! results with it.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Checks that `body` is one JSON value that a full parse would accept:
/// valid UTF-8, no lone surrogate escapes (`"\ud800"`), numbers in range.
/// `serde::de::IgnoredAny` and `RawValue` skip strings without decoding
/// them, so they let such bodies through; this decodes every string and
/// number (into serde_json's reusable scratch buffer) but builds no tree.
pub fn check(body: &[u8]) -> Result<(), serde_json::Error> {
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

/// What a JSON string needs escaped, as serde_json escapes it (so that
/// text written with [`escape_into`] is byte for byte serde_json's): `"`,
/// `\\`, and control characters (`\\b \\t \\n \\f \\r`, the others as
/// `\\u00xx`).
pub fn escape_of(byte: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    static UNICODE: [[u8; 6]; 32] = {
        let mut table = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            table[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        table
    };
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x09 => b"\\t",
        0x0a => b"\\n",
        0x0c => b"\\f",
        0x0d => b"\\r",
        0x00..=0x1f => &UNICODE[byte as usize],
        _ => return None,
    })
}

/// The length of each byte's escape ([`escape_of`]), 1 for a byte copied
/// as is.
static ESCAPED_LEN: [u8; 256] = {
    let mut table = [1u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = 6;
        byte += 1;
    }
    table[0x08] = 2;
    table[0x09] = 2;
    table[0x0a] = 2;
    table[0x0c] = 2;
    table[0x0d] = 2;
    table[b'"' as usize] = 2;
    table[b'\\' as usize] = 2;
    table
};

/// Runs of bytes shorter than this are pushed byte by byte: in a JSON
/// document quotes come every few bytes, and a copy call per short run
/// cost more than the bytes themselves (the 100-row results).
const SHORT_RUN: usize = 16;

/// Appends the contents of a JSON string for `text` (without quotes).
pub fn escape_into(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 4);
    let mut index = 0;
    while index < bytes.len() {
        let start = index;
        while index < bytes.len() && ESCAPED_LEN[usize::from(bytes[index])] == 1 {
            index += 1;
        }
        let run = &bytes[start..index];
        if run.len() < SHORT_RUN {
            for &byte in run {
                out.push(byte);
            }
        } else {
            out.extend_from_slice(run);
        }
        if let Some(&byte) = bytes.get(index) {
            if let Some(escaped) = escape_of(byte) {
                out.extend_from_slice(escaped);
            }
            index += 1;
        }
    }
}

/// The length [`escape_into`] writes for `text`.
pub fn escaped_len(text: &[u8]) -> usize {
    text.iter()
        .map(|&byte| usize::from(ESCAPED_LEN[usize::from(byte)]))
        .sum()
}

/// [`check`] for text.
pub fn is_valid(text: &str) -> bool {
    check(text.as_bytes()).is_ok()
}

/// How deeply arrays and objects nest in valid JSON `text`.
pub fn depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut scan = StringScan::default();
    for &byte in text.as_bytes() {
        if scan.in_string(byte) {
            continue;
        }
        match byte {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Where a byte-by-byte scan of valid JSON stands: inside a string, and
/// just after a backslash in one.
#[derive(Default)]
struct StringScan {
    in_string: bool,
    escaped: bool,
}

impl StringScan {
    /// Takes the next byte; true when it belongs to a string (quotes
    /// included).
    fn in_string(&mut self, byte: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
            }
            true
        } else {
            self.in_string = byte == b'"';
            self.in_string
        }
    }
}

/// Appends valid JSON `text` without the white space between tokens.
pub fn write_minified(out: &mut Vec<u8>, text: &str) {
    let mut scan = StringScan::default();
    out.reserve(text.len());
    for &byte in text.as_bytes() {
        if scan.in_string(byte) || !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(byte);
        }
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
            assert!(check(bad).is_err(), "{}", String::from_utf8_lossy(bad));
            assert!(
                serde_json::from_slice::<serde_json::Value>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"{\"a\":\"\\ud83d\\ude00 \\u00e9\",\"b\":[1,-2.5e3,null,true]}"[..],
            b"{\"a\":1,\"a\":2}",
            "\"é 😀\"".as_bytes(),
        ] {
            assert!(check(good).is_ok(), "{}", String::from_utf8_lossy(good));
        }
    }

    #[test]
    fn escaping_is_serde_jsons() {
        let every_byte: String = (0u8..=127)
            .map(char::from)
            .chain("é😀\u{2028}".chars())
            .collect();
        let mut ours = vec![b'"'];
        escape_into(&mut ours, &every_byte);
        ours.push(b'"');
        assert_eq!(ours, serde_json::to_vec(&every_byte).unwrap());
        assert_eq!(escaped_len(every_byte.as_bytes()) + 2, ours.len());
    }

    #[test]
    fn escaping_matches_serde_json_on_documents_of_every_shape() {
        // Deterministic pseudo-random texts: runs of every length between
        // escapes, multi-byte characters, control characters.
        let pieces = [
            "\"",
            "\\",
            "\n",
            "\u{1}",
            "\u{1f}",
            "a",
            "item 42",
            "é",
            "😀",
            "0123456789abcdefghij",
            ":",
            ",",
            "{",
            "}",
            "\u{2028}",
            "\t",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            let mut ours = vec![b'"'];
            escape_into(&mut ours, &text);
            ours.push(b'"');
            assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
            assert_eq!(escaped_len(text.as_bytes()) + 2, ours.len());
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        }
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth(r#"{"a": [1, {"b": "[[["}]}"#), 3);
    }

    #[test]
    fn minified_copies_keep_strings_whole() {
        let mut out = Vec::new();
        write_minified(
            &mut out,
            " { \"a b\" : [ 1 ,\n\t2 ], \"q\\\" \" : \" x \" } ",
        );
        assert_eq!(out, br#"{"a b":[1,2],"q\" ":" x "}"#);
    }
}
