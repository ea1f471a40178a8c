//! Delegated identities are checked before anything runs as them.
//!
//! An identity must name an existing role that the service account may
//! `SET ROLE` to, and must not be one that `set_config('role', …)` reads
//! specially (`none` means "back to the service account") or one that would
//! make delegation meaningless: the service account itself, a predefined
//! `pg_*` role, a superuser, or a role with BYPASSRLS, CREATEROLE or
//! REPLICATION. The answer is cached per identity for [`IDENTITY_TTL`];
//! a refusal is `DELEGATION_FAILED` and nothing runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcp_delegate_plugin_api::{codes, ToolError};

use crate::wire::Connection;

/// How long a checked identity is trusted (role attributes and grants can
/// change; a change takes effect within this time).
pub const IDENTITY_TTL: Duration = Duration::from_secs(60);
/// Most identities remembered; the cache starts over when full.
const MAX_IDENTITIES: usize = 10_000;

/// Names `set_config('role', …)` or SQL treat as keywords, whatever their
/// case.
const KEYWORDS: &[&str] = &[
    "none",
    "public",
    "current_user",
    "current_role",
    "session_user",
    "user",
    "all",
    "default",
];

fn refused(identity: &str, why: &str) -> ToolError {
    ToolError::new(
        codes::DELEGATION_FAILED,
        format!("the delegated identity '{identity}' cannot be used: {why}"),
    )
    .with("identity", identity)
}

/// The checks that need no database.
pub fn check_name(identity: &str) -> Result<(), ToolError> {
    if identity.is_empty() || identity.contains('\0') {
        return Err(refused(identity, "it is empty or contains a NUL byte"));
    }
    if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(identity)) {
        return Err(refused(identity, "it is a keyword, not a role"));
    }
    if identity.len() > 63 {
        return Err(refused(identity, "it is longer than a role name can be"));
    }
    Ok(())
}

/// Reads the answer of [`crate::sql::IDENTITY`].
fn judge(identity: &str, row: Option<&Vec<Option<String>>>) -> Result<(), ToolError> {
    let Some(row) = row else {
        return Err(refused(identity, "no such role"));
    };
    let flag = |i: usize| row.get(i).and_then(|v| v.as_deref()) == Some("true");
    let why = [
        (0, "it is a superuser"),
        (1, "it bypasses row-level security"),
        (2, "it can create roles"),
        (3, "it is a replication role"),
        (4, "it is the service account itself"),
        (5, "it is a predefined pg_* role"),
    ]
    .into_iter()
    .find(|(i, _)| flag(*i));
    if let Some((_, why)) = why {
        return Err(refused(identity, why));
    }
    if !flag(6) {
        return Err(refused(
            identity,
            "the service account is not a member of it (GRANT it to the service account)",
        ));
    }
    Ok(())
}

/// An identity's answer and when it was given.
type Checked = (Instant, Result<(), ToolError>);

/// Checked identities, per module.
#[derive(Default)]
pub struct IdentityCache {
    known: Mutex<HashMap<String, Checked>>,
}

impl IdentityCache {
    /// Checks `identity`, asking the database (as the service account, on
    /// `connection`, outside any transaction) when it is not cached.
    pub fn check(&self, identity: &str, connection: &mut Connection) -> Result<(), ToolError> {
        check_name(identity)?;
        if let Ok(known) = self.known.lock() {
            if let Some((at, answer)) = known.get(identity) {
                if at.elapsed() < IDENTITY_TTL {
                    return answer.clone();
                }
            }
        }
        let result =
            crate::service_query::with_params(connection, crate::sql::IDENTITY, &[Some(identity)])
                .map_err(|err| crate::execute::connection_lost(&err))?;
        if let Some(error) = result.error {
            // Not an answer about the identity: not cached.
            return Err(crate::execute::database_error(&error));
        }
        let answer = judge(identity, result.rows.first());
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_IDENTITIES {
                known.clear();
            }
            known.insert(identity.to_owned(), (Instant::now(), answer.clone()));
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_never_roles() {
        for bad in [
            "",
            "a\0b",
            "none",
            "NONE",
            "Public",
            "current_user",
            "SESSION_USER",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("alice").is_ok());
        assert!(check_name("DOMAIN\\odd \"user\"").is_ok());
        assert!(check_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn role_attributes() {
        let row = |flags: [bool; 7]| {
            flags
                .iter()
                .map(|f| Some(f.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(judge(
            "a",
            Some(&row([false, false, false, false, false, false, true]))
        )
        .is_ok());
        assert!(judge("a", None).is_err());
        for i in 0..6 {
            let mut flags = [false, false, false, false, false, false, true];
            flags[i] = true;
            assert!(judge("a", Some(&row(flags))).is_err(), "{i}");
        }
        assert!(judge("a", Some(&row([false; 7]))).is_err());
    }
}
