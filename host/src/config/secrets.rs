//! `{"$secret": "NAME"}` references, resolved before parsing so that every
//! typed field may hold one.

use std::path::PathBuf;

use serde_json::Value;

use super::Diagnostics;

/// Where secret values come from: `<dir>/NAME` first, then env `NAME`.
#[derive(Debug, Clone)]
pub struct SecretSource {
    pub directory: PathBuf,
}

impl Default for SecretSource {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("/run/secrets"),
        }
    }
}

/// The secret files a config looked at, with what they held (`None`:
/// missing), in the order first read: part of the config's generation, so
/// a rotated secret file is a config change.
#[derive(Debug, Default, Clone)]
pub struct SecretReads(pub Vec<(PathBuf, Option<Vec<u8>>)>);

impl SecretReads {
    fn read(&mut self, path: PathBuf) -> Option<Vec<u8>> {
        if let Some((_, content)) = self.0.iter().find(|(known, _)| *known == path) {
            return content.clone();
        }
        let content = std::fs::read(&path).ok();
        self.0.push((path, content.clone()));
        content
    }
}

impl SecretSource {
    fn lookup(&self, name: &str, reads: &mut SecretReads) -> Option<String> {
        // Secret files conventionally end with one newline; it is not part
        // of the secret.
        if let Some(bytes) = reads.read(self.directory.join(name)) {
            if let Ok(text) = String::from_utf8(bytes) {
                return Some(text.strip_suffix('\n').unwrap_or(&text).to_owned());
            }
        }
        std::env::var(name).ok()
    }

    /// Replaces every secret reference in `value`. Problems are recorded with
    /// the JSON path of the field; the secret's value never is.
    pub fn resolve(
        &self,
        value: &mut Value,
        path: &str,
        diagnostics: &mut Diagnostics,
        reads: &mut SecretReads,
    ) {
        match value {
            Value::Object(map) => {
                if map.len() == 1 {
                    if let Some(reference) = map.get("$secret") {
                        *value = self.resolve_reference(reference, path, diagnostics, reads);
                        return;
                    }
                }
                for (key, child) in map.iter_mut() {
                    self.resolve(child, &join(path, key), diagnostics, reads);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter_mut().enumerate() {
                    self.resolve(child, &format!("{path}[{index}]"), diagnostics, reads);
                }
            }
            _ => {}
        }
    }

    fn resolve_reference(
        &self,
        reference: &Value,
        path: &str,
        diagnostics: &mut Diagnostics,
        reads: &mut SecretReads,
    ) -> Value {
        let Some(name) = reference.as_str().filter(|name| is_valid_name(name)) else {
            diagnostics.error(
                path,
                "a secret reference needs a name made of letters, digits, '_', '-' or '.'",
            );
            return Value::Null;
        };
        match self.lookup(name, reads) {
            Some(secret) => Value::String(secret),
            None => {
                diagnostics.error(
                    path,
                    format!(
                        "secret '{name}' not found (looked for file {} and environment variable {name})",
                        self.directory.join(name).display()
                    ),
                );
                Value::Null
            }
        }
    }
}

/// Names map to file names: refuse anything that could leave the directory.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `a.b` style JSON paths; keys that are not identifiers use `["key"]`.
pub fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_from_directory_then_env_and_reports_paths() {
        let dir = std::env::temp_dir().join(format!("mcpd-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("DB_PASS"), "s3cret\n").unwrap();
        std::env::set_var("MCPD_TEST_ENV_SECRET", "from-env");
        let source = SecretSource {
            directory: dir.clone(),
        };
        let mut value = json!({
            "a": {"password": {"$secret": "DB_PASS"}},
            "b": [{"$secret": "MCPD_TEST_ENV_SECRET"}, {"$secret": "MISSING_ONE"}],
            "c": {"$secret": "../etc/passwd"}
        });
        let mut diagnostics = Diagnostics::default();
        let mut reads = SecretReads::default();
        source.resolve(&mut value, "", &mut diagnostics, &mut reads);
        assert_eq!(reads.0.len(), 3, "the files looked for: {:?}", reads.0);
        assert_eq!(value["a"]["password"], "s3cret");
        assert_eq!(value["b"][0], "from-env");
        let paths: Vec<_> = diagnostics.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["b[1]", "c"]);
        assert!(!format!("{:?}", diagnostics.errors).contains("s3cret"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
