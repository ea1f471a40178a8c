//! The delegated transaction: one round trip, one batch, two server flushes.
//!
//! ```text
//! P/B/E    SELECT set_config('role', $1, true)                     step 0
//!                 [, set_config('transaction_read_only', 'on', true)]
//! P/B/D/E  <the user's statement>, untyped text parameters,        step 1
//!          at most maxRows+1 rows
//! P/B/E    SELECT 1 / (current_user = $1::name)::int                step 2, the identity guard
//! S        ends the implicit transaction: commit, or roll back after an error
//! Q        DISCARD ALL
//! ```
//!
//! The three steps form one implicit transaction (no Sync between them),
//! so the role and read-only settings are transaction-local, exactly like
//! `BEGIN READ ONLY; SET LOCAL ROLE …` but without two statements. The
//! identity travels as a parameter: no quoting, any name works.
//!
//! After an error the server skips every step up to the Sync and rolls the
//! transaction back: if the role cannot be set, the user's statement never
//! runs as the service account; if the identity changed during the
//! statement, the guard divides by zero and nothing commits. Read-only
//! cannot be switched off by the statement (PostgreSQL refuses read-write
//! once a query has run). `DISCARD ALL` then resets anything session-level,
//! so nothing survives into the next caller's use of the connection. The
//! statement timeout is a session default set at connection start-up
//! (`wire::ConnectParams`), which DISCARD ALL keeps.

use mcp_delegate_plugin_api::{codes, ToolError};

use crate::wire::{Column, Connection, DbError, TextRows, WireError};

const READ_PRELUDE_SQL: &str = "SELECT pg_catalog.set_config('role', $1, true), \
     pg_catalog.set_config('transaction_read_only', 'on', true)";
const WRITE_PRELUDE_SQL: &str = "SELECT pg_catalog.set_config('role', $1, true)";
const GUARD_SQL: &str = "SELECT 1 / (current_user = $1::name)::int";

/// The steps of the batch, by index (see the module docs).
const STEP_ROLE: usize = 0;
const STEP_USER: usize = 1;
const STEP_GUARD: usize = 2;

/// As whom, and how, one statement runs.
pub struct Delegation<'a> {
    pub identity: &'a str,
    pub read_only: bool,
}

/// The user statement's result (text values).
pub struct Outcome {
    pub columns: Vec<Column>,
    pub rows: TextRows,
    /// `SELECT 3`, `INSERT 0 1`; `None` when stopped at the row limit.
    pub command_tag: Option<String>,
    pub truncated: bool,
}

/// Refuses identities PostgreSQL could never hold (any other name works,
/// `DOMAIN\user` included: it travels as a parameter, never quoted).
fn check_identity(name: &str) -> Result<(), ToolError> {
    if name.is_empty() || name.contains('\0') {
        return Err(ToolError::new(
            codes::DELEGATION_FAILED,
            "the delegated identity is empty or contains a NUL byte",
        ));
    }
    Ok(())
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
    check_identity(delegation.identity)?;
    let identity = [Some(delegation.identity)];
    let prelude = if delegation.read_only {
        READ_PRELUDE_SQL
    } else {
        WRITE_PRELUDE_SQL
    };
    let row_limit = i32::try_from(max_rows.saturating_add(1)).unwrap_or(i32::MAX);
    let encoded = (|| {
        use crate::wire::{encode_query, encode_step, encode_sync};
        let buf = connection.buffer();
        encode_step(prelude, &identity, 0, false, buf)?;
        encode_step(sql, params, row_limit, true, buf)?;
        encode_step(GUARD_SQL, &identity, 0, false, buf)?;
        encode_sync(buf);
        encode_query("DISCARD ALL", buf)
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
    let batch = connection
        .read_batch(STEP_USER, cap)
        .map_err(|err| connection_lost(&err))?;
    let discard = connection
        .read_group(0)
        .map_err(|err| connection_lost(&err))?;
    if batch.transaction_status != b'I'
        || discard.error.is_some()
        || discard.transaction_status != b'I'
    {
        // Not where a finished batch leaves a session: retire it.
        connection.mark_broken();
    }
    if let Some((step, error)) = batch.error {
        return Err(step_error(connection, delegation, step, error));
    }
    let mut completed = batch.completed;
    let command_tag = completed.get_mut(STEP_USER).and_then(Option::take);
    Ok(Outcome {
        columns: batch.columns,
        rows: batch.rows,
        command_tag,
        truncated: batch.rows_seen > cap,
    })
}

/// The tool error for a batch that failed at `step`.
fn step_error(
    connection: &mut Connection,
    delegation: &Delegation<'_>,
    step: usize,
    error: DbError,
) -> ToolError {
    match step {
        STEP_ROLE => ToolError::new(
            codes::DELEGATION_FAILED,
            format!(
                "the database refused to run as '{}': {}",
                delegation.identity, error.message
            ),
        )
        .with("sqlstate", error.code),
        STEP_GUARD => {
            // Fail closed whatever the guard's error was.
            connection.mark_broken();
            tracing::warn!(
                identity = %delegation.identity,
                sqlstate = %error.code,
                "SECURITY_VIOLATION: the session identity changed during a delegated statement; rolled back"
            );
            ToolError::new(
                codes::SECURITY_VIOLATION,
                "the statement changed the session's identity; it was rolled back and nothing is returned",
            )
        }
        _ => database_error(&error),
    }
}
