//! Parsing a JSON config value into a typed struct while collecting *every*
//! finding with its path: unknown keys become warnings, and after a type
//! error the offending value is set aside and parsing goes on, so one
//! mistake does not hide the next. Used by the host and by plugins.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::contract::{ConfigIssue, ConfigReport};

/// Most type errors reported for one value before giving up.
const MAX_ERRORS: usize = 32;

/// `T` from `value`, with paths relative to `value` (`pool.max`). `None`
/// when there was at least one error.
pub fn parse_with_report<T: DeserializeOwned>(value: &Value) -> (Option<T>, ConfigReport) {
    let mut report = ConfigReport::default();
    let mut value = value.clone();
    let mut warned = HashSet::new();
    let mut failed_paths = HashSet::new();
    loop {
        let mut unknown = Vec::new();
        // serde_ignored writes `?` for an `Option` layer; it is not a key.
        let mut record_unknown = |path: serde_ignored::Path<'_>| {
            unknown.push(path.to_string().replace(".?", "").replace("?.", ""));
        };
        let deserializer = serde_ignored::Deserializer::new(value.clone(), &mut record_unknown);
        let parsed = serde_path_to_error::deserialize::<_, T>(deserializer);
        for path in unknown {
            if warned.insert(path.clone()) {
                report.warnings.push(ConfigIssue {
                    path,
                    message: "unknown key (ignored)".into(),
                });
            }
        }
        match parsed {
            Ok(parsed) if report.errors.is_empty() => return (Some(parsed), report),
            Ok(_) => return (None, report),
            Err(err) => {
                let segments: Vec<Segment> = err.path().iter().cloned().collect();
                let path = err.path().to_string();
                let path = if path == "." { String::new() } else { path };
                // Setting a value aside can make its parent incomplete
                // ("missing field"): that is a consequence, not a finding.
                let consequence = report
                    .errors
                    .iter()
                    .any(|earlier| is_ancestor(&path, &earlier.path));
                if !consequence {
                    report.errors.push(ConfigIssue {
                        path: path.clone(),
                        message: err.into_inner().to_string(),
                    });
                }
                let retry = failed_paths.insert(path)
                    && report.errors.len() < MAX_ERRORS
                    && remove_at(&mut value, &segments);
                if !retry {
                    return (None, report);
                }
            }
        }
    }
}

fn is_ancestor(candidate: &str, path: &str) -> bool {
    candidate.is_empty()
        || path
            .strip_prefix(candidate)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Removes the value at `segments` so a re-parse can look past it. False
/// when there is nothing to remove (a missing required field, say).
fn remove_at(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        current = match (segment, current) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(child) => child,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, current) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        // Keep indexes stable: blank the element instead of removing it.
        (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
            Some(item) if !item.is_null() => {
                *item = Value::Null;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        max: u32,
    }

    #[test]
    fn reports_every_type_error_and_every_unknown_key() {
        let (parsed, report) = parse_with_report::<Sample>(&json!({
            "port": "eighty", "colour": 1, "name": 7, "nested": {"max": "ten", "extra": 0}
        }));
        assert!(parsed.is_none());
        let mut errors: Vec<_> = report.errors.iter().map(|e| e.path.as_str()).collect();
        errors.sort();
        assert_eq!(errors, ["name", "nested.max", "port"]);
        let mut warnings: Vec<_> = report.warnings.iter().map(|e| e.path.as_str()).collect();
        warnings.sort();
        assert_eq!(warnings, ["colour", "nested.extra"]);
    }

    #[test]
    fn missing_required_field_stops_without_looping() {
        let (parsed, report) = parse_with_report::<Nested>(&json!({}));
        assert!(parsed.is_none());
        assert_eq!(report.errors.len(), 1);
    }
}
