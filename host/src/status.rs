//! What the server reports about itself besides its modules: the config
//! generation now serving and the last reload that failed. Shown by
//! `/ready` and the `health-check` tool.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use mcp_delegate_plugin_api::ConfigIssue;
use serde_json::{json, Value};

/// One loaded configuration: the hash of the content it was built from
/// (the config file and every secret file it names), and when.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Over the config file and the secret files: compared, never shown.
    pub hash: String,
    /// Over the config file alone: shown (a secret-only change shows as a
    /// new `loadedAt`).
    pub file_hash: String,
    pub loaded_at: SystemTime,
}

impl Generation {
    /// The config file hash's first 16 hex digits: enough to tell
    /// generations apart.
    pub fn short_hash(&self) -> &str {
        self.file_hash.get(..16).unwrap_or(&self.file_hash)
    }
}

/// A reload that changed nothing because its config was refused.
#[derive(Debug, Clone)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub errors: Vec<ConfigIssue>,
}

/// Shared by every generation of one server process.
#[derive(Debug, Default)]
pub struct ReloadLog {
    last_failure: Mutex<Option<ReloadFailure>>,
}

impl ReloadLog {
    pub fn failed(&self, failure: ReloadFailure) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(failure);
    }

    /// A reload succeeded: the last error is history.
    pub fn succeeded(&self) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn last_failure(&self) -> Option<ReloadFailure> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// `{"generation", "loadedAt", "lastReloadError"}` as `/ready` and
/// `health-check` show it.
pub fn config_status(generation: &Generation, log: &ReloadLog) -> Value {
    let last_error = log.last_failure().map(|failure| {
        json!({
            "at": rfc3339(failure.at),
            "errors": failure.errors.iter()
                .map(|issue| json!({"path": issue.path, "message": issue.message}))
                .collect::<Vec<_>>(),
        })
    });
    json!({
        "generation": generation.short_hash(),
        "loadedAt": rfc3339(generation.loaded_at),
        "lastReloadError": last_error,
    })
}
