//! The service account's hardening profile, checked before the module
//! serves and again every [`RECHECK_AFTER`]:
//!
//! - `unsafe`: delegation guarantees nothing. The account is a superuser,
//!   bypasses row-level security, can create roles, is a replication role,
//!   inherits the delegated roles' privileges, holds them WITH ADMIN, or
//!   cannot call `set_config` at all; or the check could not run.
//! - `standard`: the account can log in and switch to the delegated roles,
//!   nothing more (`NOINHERIT`, or PostgreSQL 16+ grants `WITH INHERIT
//!   FALSE, SET TRUE`).
//! - `strict`: standard, and only the account may execute
//!   `pg_catalog.set_config` (revoked from PUBLIC), so not even an unknown
//!   query-text executor can switch roles inside a statement.
//!
//! An `unsafe` module refuses every call (`SERVICE_ACCOUNT_UNSAFE`) unless
//! its entry sets `serviceAccountCheck: "warn"`. `mcp-delegate db-setup
//! --module NAME` prints the SQL of the profiles ([`setup_sql`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcp_delegate_plugin_api::{codes, ToolError};

use crate::wire::Connection;

/// How long a profile is trusted before it is checked again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    Strict,
    Standard,
    Unsafe(String),
}

impl Profile {
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Strict => "strict",
            Profile::Standard => "standard",
            Profile::Unsafe(_) => "unsafe",
        }
    }
}

/// `serviceAccountCheck`: refuse to serve when unsafe, or only warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckMode {
    #[default]
    Enforce,
    Warn,
}

/// Reads the answer of `sql::PROFILE_16` / `sql::PROFILE_15`.
fn judge(row: &[Option<String>]) -> Profile {
    let text = |i: usize| row.get(i).and_then(|v| v.as_deref()).unwrap_or("");
    let count = |i: usize| text(i).parse::<u64>().unwrap_or(u64::MAX);
    let unsafe_because = [
        (text(0) == "true", "the service account is a superuser"),
        (text(1) == "true", "the service account has BYPASSRLS"),
        (text(2) == "true", "the service account has CREATEROLE"),
        (text(3) == "true", "the service account has REPLICATION"),
        (
            count(4) != 0,
            "the service account inherits the privileges of roles it is a member of \
             (make it NOINHERIT, or grant them WITH INHERIT FALSE)",
        ),
        (
            count(5) != 0,
            "the service account holds roles WITH ADMIN OPTION",
        ),
        (
            text(8) != "true",
            "the service account may not execute pg_catalog.set_config, so it cannot delegate",
        ),
    ];
    if let Some((_, reason)) = unsafe_because.iter().find(|(hit, _)| *hit) {
        return Profile::Unsafe((*reason).to_owned());
    }
    // A role it can switch to through its memberships, however indirect,
    // that makes delegation meaningless: code in a statement that switched
    // roles would become it.
    let reachable = text(9);
    if !reachable.is_empty() {
        return Profile::Unsafe(format!(
            "the service account can become {reachable} through its memberships \
             (a superuser, BYPASSRLS, CREATEROLE, REPLICATION or predefined pg_* role)"
        ));
    }
    if count(7) == 0 {
        Profile::Strict
    } else {
        Profile::Standard
    }
}

pub struct ProfileCheck {
    mode: CheckMode,
    state: Mutex<Option<(Instant, Profile)>>,
}

impl ProfileCheck {
    pub fn new(mode: CheckMode) -> Self {
        Self {
            mode,
            state: Mutex::new(None),
        }
    }

    /// The last profile, if it was checked within [`RECHECK_AFTER`].
    pub fn fresh(&self) -> Option<Profile> {
        let state = self.state.lock().ok()?;
        state
            .as_ref()
            .filter(|(at, _)| at.elapsed() < RECHECK_AFTER)
            .map(|(_, profile)| profile.clone())
    }

    /// The last profile, however old.
    pub fn last(&self) -> Option<Profile> {
        self.state.lock().ok()?.as_ref().map(|(_, p)| p.clone())
    }

    /// Checks the service account over `connection` (as itself, outside
    /// any transaction). A check that cannot run makes the profile unsafe.
    pub fn run(&self, instance: &str, connection: &mut Connection) -> Profile {
        let sql = if connection.server_major() >= 16 {
            crate::sql::PROFILE_16
        } else {
            crate::sql::PROFILE_15
        };
        let profile = match crate::service_query::simple(connection, sql) {
            Ok(result) => match (result.error, result.rows.first()) {
                (None, Some(row)) => judge(row),
                (Some(error), _) => Profile::Unsafe(format!(
                    "the service-account check could not run: {}",
                    error.message
                )),
                (None, None) => {
                    Profile::Unsafe("the service-account check found no account".into())
                }
            },
            Err(err) => Profile::Unsafe(format!("the service-account check could not run: {err}")),
        };
        let changed = self.last().as_ref() != Some(&profile);
        if changed {
            match &profile {
                Profile::Unsafe(reason) if self.mode == CheckMode::Enforce => tracing::error!(
                    module = %instance,
                    profile = "unsafe",
                    "{reason}: refusing every call (see `mcp-delegate db-setup --module {instance}`)"
                ),
                Profile::Unsafe(reason) => tracing::warn!(
                    module = %instance,
                    profile = "unsafe",
                    "{reason}: serving anyway (serviceAccountCheck \"warn\")"
                ),
                other => {
                    tracing::info!(module = %instance, profile = other.name(), "service account checked")
                }
            }
        }
        if let Ok(mut state) = self.state.lock() {
            *state = Some((Instant::now(), profile.clone()));
        }
        profile
    }

    /// `Err` when calls must be refused under `profile`.
    pub fn gate(&self, profile: &Profile) -> Result<(), ToolError> {
        match (profile, self.mode) {
            (Profile::Unsafe(reason), CheckMode::Enforce) => Err(ToolError::new(
                codes::SERVICE_ACCOUNT_UNSAFE,
                format!("this module is disabled: {reason}"),
            )
            .with("profile", "unsafe")),
            _ => Ok(()),
        }
    }
}

/// The SQL of the hardening profiles for a module whose service account
/// is `account`, with the delegated roles named (or a placeholder). It
/// runs as it is on PostgreSQL 15 and on 16 and later (whose grants carry
/// an INHERIT and a SET option).
pub fn setup_sql(module: &str, account: &str, delegated_roles: &[String]) -> String {
    let ident = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let literal = |text: &str| format!("'{}'", text.replace('\'', "''"));
    let mut out = format!(
        "-- mcp-delegate hardening for module {module} (service account {account}).\n\
         -- Review, then run once as a superuser. mcp-delegate never runs this itself.\n\
         \n\
         -- 1. standard: the service account logs in and switches to delegated roles,\n\
         --    and can do nothing else on its own.\n\
         ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;\n",
        ident(account)
    );
    if delegated_roles.is_empty() {
        out.push_str(
            "-- For each role users are delegated to (name them with --role):\n\
             -- PostgreSQL 16+: GRANT <role> TO <account> WITH INHERIT FALSE, SET TRUE, ADMIN FALSE;\n\
             -- PostgreSQL 15:  GRANT <role> TO <account>;\n",
        );
    } else {
        out.push_str(
            "-- The roles users are delegated to: SET without INHERIT (PostgreSQL 16+),\n\
             -- plain membership before (NOINHERIT above stops inheritance).\n\
             DO $mcpd$ BEGIN\n",
        );
        for role in delegated_roles {
            out.push_str(&format!(
                "  IF pg_catalog.current_setting('server_version_num')::int >= 160000 THEN\n\
                 \x20   EXECUTE pg_catalog.format('GRANT %I TO %I WITH INHERIT FALSE, SET TRUE, ADMIN FALSE', {r}, {a});\n\
                 \x20 ELSE\n\
                 \x20   EXECUTE pg_catalog.format('GRANT %I TO %I', {r}, {a});\n\
                 \x20 END IF;\n",
                r = literal(role),
                a = literal(account),
            ));
        }
        out.push_str("END $mcpd$;\n");
    }
    out.push_str(&format!(
        "\n\
         -- 2. strict: only the service account may call set_config, so that no\n\
         --    function that runs query text can switch roles inside a statement.\n\
         --    Other applications of this database that call set_config need their\n\
         --    own GRANT.\n\
         REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC;\n\
         GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO {};\n\
         \n\
         -- The module checks its profile at start and every minute, and shows it\n\
         -- in health-check and /ready (unsafe refuses every call unless the\n\
         -- module sets \"serviceAccountCheck\": \"warn\").\n",
        ident(account)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: [&str; 9]) -> Vec<Option<String>> {
        values
            .iter()
            .map(|v| Some((*v).to_owned()))
            .chain(std::iter::once(None))
            .collect()
    }

    #[test]
    fn profiles() {
        let safe = [
            "false", "false", "false", "false", "0", "0", "3", "0", "true",
        ];
        assert_eq!(judge(&row(safe)), Profile::Strict);
        let mut standard = safe;
        standard[7] = "1";
        assert_eq!(judge(&row(standard)), Profile::Standard);
        for (index, value) in [
            (0, "true"),
            (1, "true"),
            (2, "true"),
            (3, "true"),
            (4, "2"),
            (5, "1"),
            (8, "false"),
        ] {
            let mut bad = safe;
            bad[index] = value;
            assert!(matches!(judge(&row(bad)), Profile::Unsafe(_)), "{index}");
        }
        assert!(matches!(judge(&[]), Profile::Unsafe(_)));
        let mut reaching = row(safe);
        reaching[9] = Some("dba".into());
        assert!(matches!(judge(&reaching), Profile::Unsafe(r) if r.contains("dba")));
    }

    #[test]
    fn setup_sql_quotes_names() {
        let sql = setup_sql("postgresql1", "svc \"x\"", &["al'ice".into()]);
        assert!(
            sql.contains("ALTER ROLE \"svc \"\"x\"\"\" NOSUPERUSER"),
            "{sql}"
        );
        assert!(sql.contains("'al''ice', 'svc \"x\"'"), "{sql}");
        assert!(sql.contains(
            "REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC"
        ));
    }
}
