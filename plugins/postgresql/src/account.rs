//! The service-account check: a module refuses to run SQL for anyone if its
//! own database user is a superuser or has BYPASSRLS (delegation would then
//! guarantee nothing), and warns when it inherits delegated roles'
//! privileges (NOINHERIT is recommended: see docs/security.md).

use std::sync::Mutex;

use mcp_delegate_plugin_api::{codes, ToolError};

use crate::wire::Connection;

const ACCOUNT_SQL: &str = "\
SELECT r.rolsuper::text, r.rolbypassrls::text, r.rolinherit::text,
       coalesce((SELECT string_agg(m.rolname, ', ' ORDER BY m.rolname)
                 FROM pg_catalog.pg_auth_members am JOIN pg_catalog.pg_roles m ON m.oid = am.roleid
                 WHERE am.member = r.oid), '')
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountState {
    Unchecked,
    Safe,
    Unsafe(String),
}

pub struct AccountCheck {
    state: Mutex<AccountState>,
}

impl AccountCheck {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(AccountState::Unchecked),
        }
    }

    pub fn state(&self) -> AccountState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(AccountState::Unchecked)
    }

    /// Inspects the service account over `connection` (once).
    pub fn run(&self, instance: &str, connection: &mut Connection) -> AccountState {
        if self.state() != AccountState::Unchecked {
            return self.state();
        }
        let Ok(result) = connection.simple_query(ACCOUNT_SQL) else {
            return AccountState::Unchecked;
        };
        let Some(row) = result.rows.first() else {
            return AccountState::Unchecked;
        };
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let state = if field(0) == "true" {
            AccountState::Unsafe("the service account is a superuser".into())
        } else if field(1) == "true" {
            AccountState::Unsafe("the service account has BYPASSRLS".into())
        } else {
            AccountState::Safe
        };
        match &state {
            AccountState::Unsafe(reason) => tracing::error!(
                module = %instance,
                "{reason}: refusing to run any SQL for this module (row-level security and grants \
                 would not apply); use a NOINHERIT login role without SUPERUSER or BYPASSRLS"
            ),
            _ => {
                let members = field(3);
                if field(2) == "true" && !members.is_empty() {
                    tracing::warn!(
                        module = %instance,
                        "the service account INHERITs the privileges of {members}; \
                         ALTER ROLE … NOINHERIT is recommended"
                    );
                }
                tracing::info!(module = %instance, roles = %members, "service account may SET ROLE to these roles");
            }
        }
        if let Ok(mut current) = self.state.lock() {
            *current = state.clone();
        }
        state
    }

    pub fn refusal(&self) -> Option<ToolError> {
        match self.state() {
            AccountState::Unsafe(reason) => Some(ToolError::new(
                codes::SERVICE_ACCOUNT_UNSAFE,
                format!("this module is disabled: {reason}"),
            )),
            _ => None,
        }
    }
}
