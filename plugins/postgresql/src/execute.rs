//! The delegated transaction, pipelined into one round trip:
//!
//! ```text
//! Q  BEGIN [READ ONLY]; SET LOCAL ROLE "<identity>"; SET LOCAL statement_timeout = <ms>
//! P/B/D/E/S  <the user's statement>, untyped text parameters, at most maxRows+1 rows
//! P/B/E/S    SELECT 1 / (current_user = $1::name)::int        -- the identity guard
//! Q  COMMIT | ROLLBACK
//! Q  DISCARD ALL
//! ```
//!
//! If `SET LOCAL ROLE` fails the transaction is aborted, so the user's
//! statement cannot run as the service account. If the identity changed
//! during the statement the guard divides by zero, the transaction aborts
//! and the pipelined COMMIT becomes a ROLLBACK. `DISCARD ALL` resets
//! anything session-level, so nothing survives into the next caller's use
//! of the connection.

use mcp_delegate_plugin_api::{codes, ToolError};

use crate::wire::{Connection, DbError, GroupResult, WireError};

const GUARD_SQL: &str = "SELECT 1 / (current_user = $1::name)::int";

/// As whom, and how, one statement runs.
pub struct Delegation<'a> {
    pub identity: &'a str,
    pub read_only: bool,
    pub statement_timeout_ms: u64,
}

/// The user statement's result (text values).
pub struct Outcome {
    pub result: GroupResult,
    pub truncated: bool,
}

/// A PostgreSQL identifier, quoted. Any name is allowed (`DOMAIN\user`).
pub fn quote_ident(name: &str) -> Result<String, ToolError> {
    if name.is_empty() || name.contains('\0') {
        return Err(ToolError::new(
            codes::DELEGATION_FAILED,
            "the delegated identity is empty or contains a NUL byte",
        ));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

pub fn database_error(error: &DbError) -> ToolError {
    let code = if error.code == "57014" {
        codes::STATEMENT_TIMEOUT
    } else {
        codes::DATABASE_ERROR
    };
    let mut tool_error =
        ToolError::new(code, error.message.clone()).with("sqlstate", error.code.clone());
    if let Some(detail) = &error.detail {
        tool_error = tool_error.with("detail", detail.clone());
    }
    if let Some(hint) = &error.hint {
        tool_error = tool_error.with("hint", hint.clone());
    }
    if let Some(position) = error.position {
        tool_error = tool_error.with("position", position);
    }
    tool_error
}

pub fn connection_lost(error: &WireError) -> ToolError {
    tracing::warn!(error = %error, "database connection failed during a call");
    ToolError::new(
        codes::DATABASE_UNAVAILABLE,
        "the connection to the database was lost during the call; try again",
    )
}

/// [`run`] on a pooled connection. A read that finds its connection dead
/// (the database restarted since it was opened) is retried once on a fresh
/// one; a write is not, since it may have run.
pub fn run_pooled(
    pool: &crate::pool::PgPool,
    delegation: &Delegation<'_>,
    sql: &str,
    params: &[Option<&str>],
    max_rows: u64,
) -> Result<(Outcome, crate::pool::PooledConnection), ToolError> {
    let mut connection = pool.get()?;
    match run(&mut connection, delegation, sql, params, max_rows) {
        Err(error)
            if delegation.read_only
                && connection.is_broken()
                && error.error == codes::DATABASE_UNAVAILABLE =>
        {
            drop(connection);
            let mut fresh = pool.get()?;
            let outcome = run(&mut fresh, delegation, sql, params, max_rows)?;
            Ok((outcome, fresh))
        }
        Err(error) => Err(error),
        Ok(outcome) => Ok((outcome, connection)),
    }
}

/// Runs `sql` as `delegation.identity` and returns at most `max_rows` rows.
pub fn run(
    connection: &mut Connection,
    delegation: &Delegation<'_>,
    sql: &str,
    params: &[Option<&str>],
    max_rows: u64,
) -> Result<Outcome, ToolError> {
    let role = quote_ident(delegation.identity)?;
    let prelude = format!(
        "BEGIN{}; SET LOCAL ROLE {role}; SET LOCAL statement_timeout = {}",
        if delegation.read_only {
            " READ ONLY"
        } else {
            ""
        },
        delegation.statement_timeout_ms
    );
    let row_limit = i32::try_from(max_rows.saturating_add(1)).unwrap_or(i32::MAX);
    let end = if delegation.read_only {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    let encoded = (|| {
        let buf = connection.buffer();
        crate::wire::encode_query(&prelude, buf)?;
        crate::wire::encode_extended(sql, params, row_limit, buf)?;
        crate::wire::encode_extended(GUARD_SQL, &[Some(delegation.identity)], 0, buf)?;
        crate::wire::encode_query(end, buf)?;
        crate::wire::encode_query("DISCARD ALL", buf)
    })();
    if let Err(err) = encoded {
        connection.buffer().clear();
        return Err(ToolError::new(
            codes::INVALID_ARGUMENTS,
            format!("the statement cannot be sent: {err}"),
        ));
    }
    connection.flush().map_err(|err| connection_lost(&err))?;
    let cap = usize::try_from(max_rows).unwrap_or(usize::MAX);
    let mut read = |cap: usize| connection.read_group(cap);
    let prelude = read(0).map_err(|err| connection_lost(&err))?;
    let user = read(cap).map_err(|err| connection_lost(&err))?;
    let guard = read(1).map_err(|err| connection_lost(&err))?;
    let finish = read(0).map_err(|err| connection_lost(&err))?;
    let discard = read(0).map_err(|err| connection_lost(&err))?;
    if discard.error.is_some() || discard.transaction_status != b'I' {
        connection.mark_broken();
    }
    if let Some(error) = prelude.error {
        return Err(ToolError::new(
            codes::DELEGATION_FAILED,
            format!(
                "the database refused to run as '{}': {}",
                delegation.identity, error.message
            ),
        )
        .with("sqlstate", error.code));
    }
    if let Some(error) = &user.error {
        return Err(database_error(error));
    }
    if let Some(error) = guard.error {
        // Fail closed whatever the guard's error was.
        connection.mark_broken();
        tracing::warn!(
            identity = %delegation.identity,
            sqlstate = %error.code,
            "SECURITY_VIOLATION: the session identity changed during a delegated statement; rolled back"
        );
        return Err(ToolError::new(
            codes::SECURITY_VIOLATION,
            "the statement changed the session's identity; it was rolled back and nothing is returned",
        ));
    }
    if let Some(error) = &finish.error {
        return Err(database_error(error));
    }
    if !delegation.read_only && finish.command_tag.as_deref() != Some("COMMIT") {
        connection.mark_broken();
        return Err(ToolError::new(
            codes::DATABASE_ERROR,
            "the transaction did not commit",
        ));
    }
    let truncated = user.rows_seen > cap;
    Ok(Outcome {
        result: user,
        truncated,
    })
}
