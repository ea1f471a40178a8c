//! The suite-wide audit sweep's fixtures. When `MCPD_TEST_AUDIT_DIR` is
//! set (the README's test command sets it), every host a test starts
//! writes its audit log into that directory, and the fixtures record there
//! every token they sign and every string literal and parameter value
//! they send; `tests/tests/zz_audit_sweep.rs`, the last test binary,
//! looks for each of them in every audit line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// The directory, when the sweep is on.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os("MCPD_TEST_AUDIT_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// A fresh audit file for one host.
pub fn audit_file() -> Option<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = dir()?;
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join(format!(
        "audit-{}-{}.jsonl",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Appends `value` to the list `kind` (`tokens`, `literals`).
pub fn record(kind: &str, value: &str) {
    let Some(dir) = dir() else {
        return;
    };
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut line = value.replace('\n', " ");
    line.push('\n');
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join(format!("{kind}.txt")))
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Records the string literals of the `sql` argument and the parameter
/// values of a JSON-RPC body about to be sent.
pub fn record_request(body: &[u8]) {
    if dir().is_none() {
        return;
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let arguments = &request["params"]["arguments"];
    if let Some(sql) = arguments["sql"].as_str() {
        for literal in string_literals(sql) {
            record("literals", &literal);
        }
    }
    if let Some(params) = arguments["params"].as_array() {
        for param in params {
            let text = match param {
                Value::String(text) => text.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            record("literals", &text);
        }
    }
}

/// The contents of `'…'` literals in `sql` (with `''` unescaped).
pub fn string_literals(sql: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut literal = String::new();
        loop {
            match chars.next() {
                None => break,
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    literal.push('\'');
                }
                Some('\'') => break,
                Some(other) => literal.push(other),
            }
        }
        literals.push(literal);
    }
    literals
}
