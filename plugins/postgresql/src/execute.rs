//! The delegated transaction: one round trip, one batch, one Sync.
//!
//! ```text
//! (first use of a connection: P×5 named statements)
//! B/E    BEGIN READ ONLY | BEGIN                                      step 0
//! B/E    SELECT pg_catalog.set_config('role', $1, true)               step 1
//! [P] B/D/E  <the user's statement> (unnamed on its text's first run,  step 2
//!          then named and cached per connection by its text), untyped
//!          text parameters, at most maxRows+1 rows
//! P/B/E  the guard (crate::sql::GUARD): identity unchanged, count of   step 3
//!        SQL-level prepared statements, session advisory locks released
//! B/E    ROLLBACK | COMMIT                                            step 4
//! S
//! (writes only: Q DISCARD ALL)
//! ```
//!
//! Before the batch, on the first use of an identity (cached for a
//! minute), the identity is checked as the service account
//! ([`crate::identity`]): a role that does not exist, that the service
//! account cannot assume, or that would make delegation meaningless
//! (`none`, the service account, superusers…) runs nothing.
//!
//! Our own statements (but the guard, see [`crate::sql::GUARD`]) are named
//! and parsed once per connection, and users' statements are cached per
//! connection by their text (`wire::SessionStatements`): parsing and
//! planning every statement on every call tripled PostgreSQL's CPU per
//! call (measured with pgbench on this batch: 143 → 49 µs). The identity
//! travels as a parameter: no quoting, any name works.
//!
//! The user statement's rows go to a [`RowSink`] as they arrive (the
//! result writer, bounded by `maxResultBytes`). A sink that gives up
//! abandons the batch: the statement is cancelled and the connection
//! dropped, and no row is returned (the guard never ran).
//!
//! After an error the server skips every step up to the Sync: if the role
//! cannot be set, the user's statement never runs as the service account;
//! if the identity changed during the statement, the guard divides by zero
//! and nothing commits. The aborted transaction is then rolled back and the
//! session reset with `DISCARD ALL`, both in one more batch (on errors
//! only). ROLLBACK must come right before DISCARD ALL there: DISCARD ALL
//! refuses to run in a pipeline after any other statement of its implicit
//! transaction, and a transaction-control statement ends that transaction.
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
//!
//! Behind a transaction-mode pooler (`wire::Pooling::Transaction`) each
//! transaction may run on another server session, shared with the
//! module's other users, and the batch has another shape:
//!
//! ```text
//! Q      BEGIN; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; …;         step 0
//!        COMMIT; BEGIN [READ ONLY]         (crate::sql::BEGIN_READ_POOLED)
//! P/B/E  set_config('role', …) and every session default, locally     step 1
//! P/B/D/E  <the user's statement>, unnamed                            step 2
//! P/B/E  the guard                                                    step 3
//! P/B/E  ROLLBACK | COMMIT                                            step 4
//! P/B/E  DISCARD ALL                                                  step 5
//! S
//! ```
//!
//! Nothing is named (a named statement would exist on one server session
//! only), and nothing of the server session is trusted: step 0 puts back
//! whatever an earlier transaction left and commits that (a hostile
//! statement can make the DISCARD ALL at the end of its own call fail, and
//! the pooler then hands the session on as it is), and step 1 sets every
//! session default the module relies on. The pooler keeps the server
//! session ours from step 0 to the ReadyForQuery that says "idle": a
//! failed batch leaves its
//! transaction failed, so its reset runs on the same session; a failure of
//! step 5 comes after the transaction ended and is only logged (a committed
//! write is reported as committed); a failure of step 0 drops the
//! connection, and PgBouncer closes the server session: its state could
//! not be put back.

use mcp_delegate_plugin_api::{codes, ToolError};
use postgres_protocol::message::backend::DataRowBody;

use crate::batch::{
    encode_pooled_batch, encode_session_batch, read_pooled_batch, Steps, BEGIN_READ, BEGIN_WRITE,
    COMMIT, ROLLBACK, SET_ROLE, SET_ROLE_CLAIMS, STEP_BEGIN, STEP_END, STEP_GUARD, STEP_RESET,
    STEP_ROLE, STEP_USER,
};
use crate::identity::IdentityCache;
use crate::pool::{PgPool, PooledConnection};
use crate::sql;
use crate::wire::{Column, Connection, DbError, Flow, Pooling, RowSink, UserStatement, WireError};

/// As whom, and how, one statement runs.
pub struct Delegation<'a> {
    pub identity: &'a str,
    pub read_only: bool,
    /// Who is calling, set in the transaction beside the role.
    pub attribution: Attribution<'a>,
}

/// The caller, as the transaction-local settings `mcp.subject`,
/// `mcp.client`, `mcp.tool`, `mcp.request_id` (and `request.jwt.claims`
/// when the module passes claims) carry it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attribution<'a> {
    pub subject: Option<&'a str>,
    pub client: Option<&'a str>,
    pub tool: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub claims: Option<&'a str>,
}

impl<'a> Attribution<'a> {
    pub fn of(context: &'a mcp_delegate_plugin_api::CallContext) -> Self {
        Self {
            subject: context.user_id.as_deref(),
            client: context.client.as_deref(),
            tool: context.tool.as_deref(),
            request_id: Some(context.request_id.as_str()),
            claims: context.claims.as_deref(),
        }
    }
}

/// What the user's statement came to (its rows went to the sink).
#[derive(Debug)]
pub struct Outcome {
    /// `SELECT 3`, `INSERT 0 1`; `None` when stopped at the row limit.
    pub command_tag: Option<String>,
    /// The sink gave up: the statement was cancelled, nothing is verified,
    /// nothing may be returned.
    pub abandoned: bool,
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

/// A write whose batch was sent but whose answer never came: it may have
/// committed. Said so, so that nobody retries it blindly.
fn write_outcome_unknown(error: &WireError) -> ToolError {
    tracing::warn!(error = %error, "database connection failed after a write was sent");
    ToolError::new(
        codes::DATABASE_UNAVAILABLE,
        "the connection to the database was lost after the write was sent: it may or may \
         not have committed; check before you try again",
    )
    .with("outcome", "unknown")
}

pub fn connection_lost(error: &WireError) -> ToolError {
    tracing::warn!(error = %error, "database connection failed during a call");
    ToolError::new(
        codes::DATABASE_UNAVAILABLE,
        "the connection to the database was lost during the call; try again",
    )
}

/// Records whether a sink was given anything, so that a retry on a fresh
/// connection never hands it a result twice.
struct Watched<'s> {
    inner: &'s mut dyn RowSink,
    touched: bool,
}

impl RowSink for Watched<'_> {
    fn columns(&mut self, columns: &[Column]) {
        self.touched = true;
        self.inner.columns(columns);
    }
    fn row_limit(&self) -> usize {
        self.inner.row_limit()
    }
    fn row(&mut self, row: &DataRowBody) -> Result<Flow, WireError> {
        self.touched = true;
        self.inner.row(row)
    }
    fn oversized(&mut self, wire_len: usize) -> Flow {
        self.touched = true;
        self.inner.oversized(wire_len)
    }
}

/// [`run`] on a pooled connection, after checking the identity. A read
/// that finds its connection dead before any answer (the database
/// restarted since it was opened) is retried once on a fresh one; a write
/// is not, since it may have run.
pub fn run_pooled(
    pool: &PgPool,
    identities: &IdentityCache,
    delegation: &Delegation<'_>,
    sql: &str,
    params: &[Option<&str>],
    sink: &mut dyn RowSink,
    max_rows: u64,
) -> Result<(Outcome, PooledConnection), ToolError> {
    let mut connection = pool.get()?;
    if let Err(error) = identities.check(delegation.identity, &mut connection) {
        // The check runs nothing of the caller's: one that lost its
        // connection (or, behind a pooler, found a server session it could
        // not clean up) is tried once more on another.
        if !(connection.is_broken() && error.error == codes::DATABASE_UNAVAILABLE) {
            return Err(error);
        }
        drop(connection);
        connection = pool.get()?;
        identities.check(delegation.identity, &mut connection)?;
    }
    let mut watched = Watched {
        inner: sink,
        touched: false,
    };
    match run(
        &mut connection,
        delegation,
        sql,
        params,
        &mut watched,
        max_rows,
    ) {
        Err(error)
            if delegation.read_only
                && !watched.touched
                && connection.is_broken()
                && error.error == codes::DATABASE_UNAVAILABLE =>
        {
            drop(connection);
            let mut fresh = pool.get()?;
            let outcome = run(&mut fresh, delegation, sql, params, watched.inner, max_rows)?;
            Ok((outcome, fresh))
        }
        Err(error) => Err(error),
        Ok(outcome) => Ok((outcome, connection)),
    }
}

/// Resets the session completely (and our named statements with it): the
/// rollback of whatever transaction is open and DISCARD ALL, in one batch.
/// One batch matters behind a transaction-mode pooler: a failed
/// transaction keeps its server session assigned to us until the
/// ReadyForQuery that follows the rollback, so the reset runs on the
/// session the failed statement used (the pooler may hand the next
/// transaction another one).
fn discard_all(connection: &mut Connection) {
    connection.statements.forget_all();
    let buf = connection.buffer();
    let sent = crate::wire::encode_step(sql::ROLLBACK, &[], 0, false, buf)
        .and_then(|()| crate::wire::encode_step(sql::DISCARD_ALL, &[], 0, false, buf))
        .map(|()| crate::wire::encode_sync(buf))
        .and_then(|()| connection.flush());
    let mut no_rows = crate::wire::CollectRows::new(0);
    let clean = sent.is_ok()
        && connection
            .read_batch(usize::MAX, &mut no_rows, None)
            .is_ok_and(|reset| {
                reset.error.is_none()
                    && reset.transaction_status == b'I'
                    && reset.completed.last().and_then(Option::as_deref) == Some("DISCARD ALL")
            });
    if !clean {
        connection.mark_broken();
    }
}

/// Runs `sql` as `delegation.identity`, its rows to `sink`, at most
/// `max_rows` of them (the sink is told about one more, then the portal
/// is suspended).
pub fn run(
    connection: &mut Connection,
    delegation: &Delegation<'_>,
    sql: &str,
    params: &[Option<&str>],
    sink: &mut dyn RowSink,
    max_rows: u64,
) -> Result<Outcome, ToolError> {
    crate::identity::check_name(delegation.identity)?;
    run_batch(connection, delegation, sql, params, sink, max_rows, true)
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
    sink: &mut dyn RowSink,
    max_rows: u64,
    may_retry: bool,
) -> Result<Outcome, ToolError> {
    let identity = [Some(delegation.identity)];
    let pooled = connection.pooling() == Pooling::Transaction;
    // Behind a pooler the session defaults are set in the transaction:
    // the timeout and the application name are parameters after the
    // claims (see sql::SET_ROLE_POOLED).
    let defaults = pooled.then(|| connection.session_defaults());
    let who = delegation.attribution;
    let mut set_role_params: [Option<&str>; 8] = [
        Some(delegation.identity),
        who.subject,
        who.client,
        who.tool,
        who.request_id,
        None,
        None,
        None,
    ];
    let mut count = 5;
    let more = [
        who.claims,
        defaults.as_deref().map(|d| &*d.statement_timeout),
        defaults.as_deref().map(|d| &*d.application_name),
    ];
    for value in more.into_iter().flatten() {
        set_role_params[count] = Some(value);
        count += 1;
    }
    let set_role_params = &set_role_params[..count];
    let (begin, end) = if delegation.read_only {
        (BEGIN_READ, ROLLBACK)
    } else {
        (BEGIN_WRITE, COMMIT)
    };
    let row_limit = i32::try_from(max_rows.saturating_add(1)).unwrap_or(i32::MAX);
    let user = if pooled {
        UserStatement::unnamed()
    } else {
        connection.statements.user_statement(sql)
    };
    let encoded = if pooled {
        let steps = Steps {
            begin: if delegation.read_only {
                sql::BEGIN_READ_POOLED
            } else {
                sql::BEGIN_WRITE_POOLED
            },
            set_role: match who.claims {
                Some(_) => sql::SET_ROLE_CLAIMS_POOLED,
                None => sql::SET_ROLE_POOLED,
            },
            set_role_params,
            end: end.1,
            read_only: delegation.read_only,
        };
        encode_pooled_batch(connection, &steps, &identity, sql, params, row_limit)
    } else {
        let steps = Steps {
            begin: begin.0,
            set_role: match who.claims {
                Some(_) => SET_ROLE_CLAIMS.0,
                None => SET_ROLE.0,
            },
            set_role_params,
            end: end.0,
            read_only: delegation.read_only,
        };
        encode_session_batch(connection, &steps, &identity, &user, sql, params, row_limit)
    };
    if let Err(err) = encoded {
        connection.buffer().clear();
        // Statements evicted for this one left the bookkeeping, but their
        // Close messages went with the buffer: reset the session so none
        // is left on the server.
        discard_all(connection);
        return Err(ToolError::new(
            codes::INVALID_ARGUMENTS,
            format!("the statement cannot be sent: {err}"),
        ));
    }
    connection.flush().map_err(|err| connection_lost(&err))?;
    // Once sent, a write may commit even if its answer is lost.
    let lost: fn(&WireError) -> ToolError = if delegation.read_only {
        connection_lost
    } else {
        write_outcome_unknown
    };
    let batch = if pooled {
        read_pooled_batch(connection, sink, lost)?
    } else {
        connection
            .read_batch(STEP_USER, sink, Some(STEP_GUARD))
            .map_err(|err| lost(&err))?
    };
    if batch.abandoned {
        // The statement may still be running: stop it. The connection is
        // marked broken and is dropped with its transaction.
        if let Some(key) = connection.cancel_key() {
            key.cancel(std::time::Duration::from_secs(5));
        }
        connection.statements.forget_all();
        return Ok(Outcome {
            command_tag: None,
            abandoned: true,
        });
    }
    let ended = batch.completed.get(STEP_END).and_then(Option::as_deref);
    let needs_reset = if pooled {
        // The batch ended with DISCARD ALL on the server session it ran on.
        // A batch that failed before its end leaves its transaction failed,
        // which keeps the server session ours: reset it. Once the
        // transaction ended, the pooler has the session back whatever
        // happened after: if the DISCARD ALL failed there, the next batch
        // on that server session commits a clean-up before anything else
        // (sql::BEGIN_READ_POOLED); nothing can be done from here.
        if let (Some(end), Some((STEP_RESET.., error))) = (ended, &batch.error) {
            tracing::warn!(
                end,
                sqlstate = %error.code,
                "the reset after a pooled transaction failed; the next batch on that server session commits a clean-up first"
            );
        }
        batch.transaction_status != b'I'
    } else {
        connection.statements.fixed_ready = true;
        // A write's DISCARD ALL ran after the batch; a read needs none if
        // clean.
        let reset_done = if delegation.read_only {
            true
        } else {
            // The batch's answer is in: a lost answer to the reset after
            // it leaves the connection broken (dropped), not the call
            // failed.
            let discard = connection.read_group(0);
            connection.statements.forget_all();
            discard
                .is_ok_and(|discard| discard.error.is_none() && discard.transaction_status == b'I')
        };
        // A read that left an SQL-level prepared statement behind (the
        // guard counts them) needs the full reset too.
        let prepared_by_sql = delegation.read_only
            && batch
                .probe_row
                .as_ref()
                .and_then(|row| row.get(1).cloned().flatten())
                .is_none_or(|count| count != "0");
        batch.error.is_some() || batch.transaction_status != b'I' || !reset_done || prepared_by_sql
    };
    if needs_reset {
        discard_all(connection);
    }
    // Behind a pooler the reset is the last step: its failure (during it,
    // or when its own implicit transaction ends) does not undo a
    // transaction that ended (a committed write is reported as committed).
    let batch_error = batch
        .error
        .filter(|(step, _)| !(pooled && *step >= STEP_RESET && ended.is_some()));
    if let Some((step, error)) = batch_error {
        if may_retry && step == STEP_USER && !user.parse && is_stale_cached_plan(&error) {
            // The session was reset above: the statement is parsed anew.
            return run_batch(connection, delegation, sql, params, sink, max_rows, false);
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
    Ok(Outcome {
        command_tag: completed.get_mut(STEP_USER).and_then(Option::take),
        abandoned: false,
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
