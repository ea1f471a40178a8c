//! The delegated transaction: one round trip, one batch, one Sync.
//!
//! ```text
//! (first use of a connection: P×5 named statements)
//! B/E    BEGIN READ ONLY | BEGIN                                      step 0
//! B/E    SELECT set_config('role', $1, true)                          step 1
//! [P] B/D/E  <the user's statement> (named, cached per connection by its
//!          text), untyped text parameters, at most maxRows+1 rows       step 2
//! P/B/E  SELECT 1 / (current_user = $1::name)::int,                   step 3, guard + hygiene
//!               count of SQL-level prepared statements,
//!               pg_advisory_unlock_all()
//! B/E    ROLLBACK | COMMIT                                            step 4
//! S
//! (writes only: Q DISCARD ALL)
//! ```
//!
//! Our own statements (but the guard, see [`GUARD_SQL`]) are named and
//! parsed once per connection, and users' statements are cached per
//! connection by their text (`wire::SessionStatements`): parsing and
//! planning every statement on every call tripled PostgreSQL's CPU per
//! call (measured with pgbench on this batch: 143 → 49 µs). The identity
//! travels as a parameter: no quoting, any name works.
//!
//! After an error the server skips every step up to the Sync: if the role
//! cannot be set, the user's statement never runs as the service account;
//! if the identity changed during the statement, the guard divides by zero
//! and nothing commits. The aborted transaction is then rolled back and the
//! session reset with `DISCARD ALL` (a second round trip, on errors only).
//!
//! Session hygiene: nothing the statement did may reach the next caller of
//! the connection. A read ends in ROLLBACK, which undoes everything
//! transactional: settings (even session-level `set_config`), roles,
//! temporary tables, LISTEN, cursors. What a rollback does not undo, the
//! guard step handles: it releases session-level advisory locks, and it
//! counts SQL-level prepared statements (a function can `EXECUTE
//! 'PREPARE …'`); if there are any, the session gets a full `DISCARD ALL`.
//! A write commits, so it is always followed by `DISCARD ALL`. The
//! statement timeout is a session default set at connection start-up
//! (`wire::ConnectParams`), which DISCARD ALL keeps.

use mcp_delegate_plugin_api::{codes, ToolError};

use crate::wire::{Column, Connection, DbError, TextRows, WireError};

/// Our named statements: (name, SQL, parameter count).
const BEGIN_READ: (&str, &str, usize) = ("mcpd_begin_read", "BEGIN READ ONLY", 0);
const BEGIN_WRITE: (&str, &str, usize) = ("mcpd_begin_write", "BEGIN", 0);
const SET_ROLE: (&str, &str, usize) = (
    "mcpd_set_role",
    "SELECT pg_catalog.set_config('role', $1, true)",
    1,
);
/// The guard is parsed afresh on every call, never named: the user's
/// statement runs before it and could replace a named statement
/// (`DEALLOCATE`, then `PREPARE` of the same name) with one that always
/// passes. The statements before the user's are named, and safe: a
/// replacement made by an earlier call is an SQL-level prepared statement,
/// which that call's guard counted, and the session was reset.
const GUARD_SQL: &str = "SELECT 1 / (current_user = $1::name)::int, \
     (count(*) FILTER (WHERE from_sql))::text, pg_catalog.pg_advisory_unlock_all() \
     FROM pg_catalog.pg_prepared_statement()";
const ROLLBACK: (&str, &str, usize) = ("mcpd_rollback", "ROLLBACK", 0);
const COMMIT: (&str, &str, usize) = ("mcpd_commit", "COMMIT", 0);
const NAMED_STATEMENTS: [(&str, &str, usize); 5] =
    [BEGIN_READ, BEGIN_WRITE, SET_ROLE, ROLLBACK, COMMIT];

/// The steps of the batch, by index (see the module docs).
const STEP_BEGIN: usize = 0;
const STEP_ROLE: usize = 1;
const STEP_USER: usize = 2;
const STEP_GUARD: usize = 3;
const STEP_END: usize = 4;

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

/// Resets the session completely (and our named statements with it).
fn discard_all(connection: &mut Connection) {
    connection.statements.forget_all();
    let sent = crate::wire::encode_query("ROLLBACK", connection.buffer())
        .and_then(|()| crate::wire::encode_query("DISCARD ALL", connection.buffer()))
        .and_then(|()| connection.flush());
    let clean = sent.is_ok()
        && connection.read_group(0).is_ok()
        && connection
            .read_group(0)
            .is_ok_and(|discard| discard.error.is_none() && discard.transaction_status == b'I');
    if !clean {
        connection.mark_broken();
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
    run_batch(connection, delegation, sql, params, max_rows, true)
}

/// "cached plan must not change result type" (SQLSTATE 0A000, which other
/// errors share, so the message is checked too): a cached statement whose
/// table changed shape. Raised before anything ran; run it afresh.
fn is_stale_cached_plan(error: &DbError) -> bool {
    error.code == "0A000" && error.message.contains("cached plan")
}

fn run_batch(
    connection: &mut Connection,
    delegation: &Delegation<'_>,
    sql: &str,
    params: &[Option<&str>],
    max_rows: u64,
    may_retry: bool,
) -> Result<Outcome, ToolError> {
    let identity = [Some(delegation.identity)];
    let (begin, end) = if delegation.read_only {
        (BEGIN_READ, ROLLBACK)
    } else {
        (BEGIN_WRITE, COMMIT)
    };
    let row_limit = i32::try_from(max_rows.saturating_add(1)).unwrap_or(i32::MAX);
    let user = connection.statements.user_statement(sql);
    let encoded = (|| {
        use crate::wire::{encode_prepare, encode_run_prepared, encode_step, encode_sync};
        let prepare_fixed = !connection.statements.fixed_ready;
        let buf = connection.buffer();
        if prepare_fixed {
            // Parse errors would surface as step 0's; they do not happen.
            for (name, sql, param_count) in NAMED_STATEMENTS {
                encode_prepare(name, sql, param_count, buf)?;
            }
        }
        if let Some(evicted) = &user.evict {
            crate::wire::encode_close_statement(evicted, buf)?;
        }
        encode_run_prepared(begin.0, &[], 0, false, buf)?;
        encode_run_prepared(SET_ROLE.0, &identity, 0, false, buf)?;
        if user.parse {
            encode_prepare(&user.name, sql, params.len(), buf)?;
        }
        encode_run_prepared(&user.name, params, row_limit, true, buf)?;
        encode_step(GUARD_SQL, &identity, 0, false, buf)?;
        encode_run_prepared(end.0, &[], 0, false, buf)?;
        encode_sync(buf);
        if !delegation.read_only {
            crate::wire::encode_query("DISCARD ALL", buf)?;
        }
        Ok::<(), WireError>(())
    })();
    if let Err(err) = encoded {
        connection.buffer().clear();
        connection.statements.forget(sql);
        return Err(ToolError::new(
            codes::INVALID_ARGUMENTS,
            format!("the statement cannot be sent: {err}"),
        ));
    }
    connection.flush().map_err(|err| connection_lost(&err))?;
    let cap = usize::try_from(max_rows).unwrap_or(usize::MAX);
    let batch = connection
        .read_batch(STEP_USER, cap, Some(STEP_GUARD))
        .map_err(|err| connection_lost(&err))?;
    connection.statements.fixed_ready = true;
    // A write's DISCARD ALL ran in the batch; a read needs none if clean.
    let reset_done = if delegation.read_only {
        true
    } else {
        let discard = connection
            .read_group(0)
            .map_err(|err| connection_lost(&err))?;
        connection.statements.forget_all();
        discard.error.is_none() && discard.transaction_status == b'I'
    };
    // Anything but a clean batch (and, for a read, no SQL-level prepared
    // statement left behind) gets the full reset.
    let prepared_by_sql = delegation.read_only
        && batch
            .probe_row
            .as_ref()
            .and_then(|row| row.get(1).cloned().flatten())
            .is_none_or(|count| count != "0");
    if batch.error.is_some() || batch.transaction_status != b'I' || !reset_done || prepared_by_sql {
        discard_all(connection);
    }
    if let Some((step, error)) = batch.error {
        if may_retry && step == STEP_USER && !user.parse && is_stale_cached_plan(&error) {
            // The session was reset above: the statement is parsed anew.
            return run_batch(connection, delegation, sql, params, max_rows, false);
        }
        return Err(step_error(connection, delegation, step, error));
    }
    let mut completed = batch.completed;
    let expected_end = if delegation.read_only {
        "ROLLBACK"
    } else {
        "COMMIT"
    };
    if completed.get(STEP_END).and_then(Option::as_deref) != Some(expected_end) {
        connection.mark_broken();
        return Err(ToolError::new(
            codes::DATABASE_ERROR,
            "the transaction did not end as expected",
        ));
    }
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
        STEP_BEGIN | STEP_ROLE => ToolError::new(
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
