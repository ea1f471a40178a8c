//! The audit log: one JSON line per tool call and per refused request,
//! answering "who ran what, as whom, through which client, and when".
//! Lines carry statements only as the module's normalized text (constants
//! replaced by placeholders) and fingerprint: never a token, a secret, a
//! parameter value, a literal or a row, and never an error message (a
//! database message can quote a value); codes and SQLSTATEs instead.
//!
//! The sink is opened when a [`crate::runtime::Runtime`] is built, so every
//! reload (and `SIGHUP`) reopens a file that log rotation moved away.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{AuditConfig, AuditFailMode};

/// An audit line could not be written.
#[derive(Debug, thiserror::Error)]
#[error("the audit log cannot be written: {0}")]
pub struct AuditError(#[from] std::io::Error);

enum Sink {
    Stdout,
    File { path: PathBuf, file: Mutex<File> },
}

/// The audit sink of one generation.
pub struct AuditLog {
    sink: Sink,
    fail_mode: AuditFailMode,
}

impl AuditLog {
    /// Opens the sink `config` names (a file: created if missing,
    /// appended to).
    pub fn open(config: &AuditConfig) -> Result<Self, String> {
        let sink = if config.sink == "stdout" {
            Sink::Stdout
        } else {
            let path = PathBuf::from(&config.sink);
            if !path.is_absolute() {
                return Err("must be \"stdout\" or an absolute file path".to_owned());
            }
            let mut options = std::fs::OpenOptions::new();
            options.append(true).create(true);
            #[cfg(unix)]
            {
                // Who ran what is for the operator's eyes only.
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let file = options
                .open(&path)
                .map_err(|err| format!("cannot open {} for appending: {err}", path.display()))?;
            Sink::File {
                path,
                file: Mutex::new(file),
            }
        };
        Ok(Self {
            sink,
            fail_mode: config.fail_mode,
        })
    }

    /// `failMode: closed`: a call is refused when its line cannot be
    /// written.
    pub fn fails_closed(&self) -> bool {
        self.fail_mode == AuditFailMode::Closed
    }

    /// Writes one record as one line, in one `write` (`O_APPEND`: lines
    /// of concurrent writers never interleave).
    pub fn write(&self, record: &AuditRecord<'_>) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let written = match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line).and_then(|()| out.flush())
            }
            Sink::File { file, .. } => file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_all(&line),
        };
        written.map_err(|err| {
            let path = match &self.sink {
                Sink::Stdout => "stdout".to_owned(),
                Sink::File { path, .. } => path.display().to_string(),
            };
            tracing::error!(sink = %path, error = %err, "audit line not written");
            crate::metrics::METRICS.audit_failure();
            AuditError(err)
        })
    }
}

/// What an audit line says. Every field is optional but `time`, `event`
/// and `outcome`; absent ones are left out.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord<'a> {
    pub time: String,
    /// `tool-call`, `call-start` (fail-closed mode, before the call runs)
    /// or `request-refused`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// The token's user id (`sub` unless mapped otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<&'a str>,
    /// The requestor IdP's name in the config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<&'a str>,
    /// `azp` or `client_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    /// `admin`, `user`, `guest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<&'a str>,
    /// The database role the call ran as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_class: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement_kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<&'a str>,
    /// The statement with every constant replaced by a placeholder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// `ok`, `error`, `unknown-tool`, `refused`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<&'a str>,
    /// The policy's reason category for a refused statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal_reason: Option<&'a str>,
    /// A refused request's HTTP status and reason (`invalid_token`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Now, as audit lines write it (RFC 3339, milliseconds, UTC).
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
