//! The two shapes of the delegated batch, encoded (see `crate::execute`
//! for what each step is for): on a session of our own, our statements
//! named and prepared once per connection; behind a transaction-mode
//! pooler, everything unnamed, a committed clean-up first and DISCARD ALL
//! last. And the reading of the pooled shape, which begins with a simple
//! query.

use mcp_delegate_plugin_api::{codes, ToolError};

use crate::sql;
use crate::wire::{Connection, RowSink, UserStatement, WireError};

/// Our named statements: (name, SQL, parameter count).
pub(crate) const BEGIN_READ: (&str, &str, usize) = ("mcpd_begin_read", sql::BEGIN_READ, 0);
pub(crate) const BEGIN_WRITE: (&str, &str, usize) = ("mcpd_begin_write", sql::BEGIN_WRITE, 0);
pub(crate) const SET_ROLE: (&str, &str, usize) = ("mcpd_set_role", sql::SET_ROLE, 5);
pub(crate) const SET_ROLE_CLAIMS: (&str, &str, usize) =
    ("mcpd_set_role_claims", sql::SET_ROLE_CLAIMS, 6);
pub(crate) const ROLLBACK: (&str, &str, usize) = ("mcpd_rollback", sql::ROLLBACK, 0);
pub(crate) const COMMIT: (&str, &str, usize) = ("mcpd_commit", sql::COMMIT, 0);
const NAMED_STATEMENTS: [(&str, &str, usize); 6] = [
    BEGIN_READ,
    BEGIN_WRITE,
    SET_ROLE,
    SET_ROLE_CLAIMS,
    ROLLBACK,
    COMMIT,
];

/// The steps of the batch, by index (see `crate::execute`).
pub(crate) const STEP_BEGIN: usize = 0;
pub(crate) const STEP_ROLE: usize = 1;
pub(crate) const STEP_USER: usize = 2;
pub(crate) const STEP_GUARD: usize = 3;
pub(crate) const STEP_END: usize = 4;
/// Behind a transaction-mode pooler only: DISCARD ALL.
pub(crate) const STEP_RESET: usize = 5;

/// Reads a pooled batch (see [`encode_pooled_batch`]): the simple query
/// that begins it, then the extended steps, numbered as on a session of
/// our own (the simple query is step 0). If the clean-up in the simple
/// query failed, nothing else ran, and the connection is dropped so that
/// PgBouncer closes the server session: its state could not be put back.
pub(crate) fn read_pooled_batch(
    connection: &mut Connection,
    sink: &mut dyn RowSink,
    lost: fn(&WireError) -> ToolError,
) -> Result<crate::wire::BatchResult, ToolError> {
    let begun = connection.read_group(0).map_err(|err| lost(&err))?;
    if let Some(error) = begun.error {
        // Nothing of the caller's runs (its transaction failed first), and
        // the rest is not read: the connection is dropped without a
        // rollback. A client that leaves while its server session is in a
        // transaction makes PgBouncer close that server connection, whatever
        // role it was left with. (A read is then retried on another.)
        tracing::warn!(
            sqlstate = %error.code,
            "a pooled server session could not be cleaned up before a call; dropping the connection"
        );
        connection.mark_broken();
        return Err(ToolError::new(
            codes::DATABASE_UNAVAILABLE,
            "the database session could not be prepared for the call; nothing ran; try again",
        ));
    }
    let mut batch = connection
        .read_batch(STEP_USER - 1, sink, Some(STEP_GUARD - 1))
        .map_err(|err| lost(&err))?;
    if begun.transaction_status != b'T' {
        connection.mark_broken();
        return Err(ToolError::new(
            codes::DATABASE_ERROR,
            "the transaction did not begin as expected",
        ));
    }
    batch.completed.insert(STEP_BEGIN, Some("BEGIN".to_owned()));
    if let Some((step, _)) = batch.error.as_mut() {
        *step += 1;
    }
    Ok(batch)
}

/// The steps of a batch: our statements by name on a session of our own,
/// as SQL behind a transaction-mode pooler.
pub(crate) struct Steps<'a> {
    pub begin: &'a str,
    pub set_role: &'a str,
    pub set_role_params: &'a [Option<&'a str>],
    pub end: &'a str,
    pub read_only: bool,
}

/// Encodes the batch on a session of our own: our statements named (and
/// created on the connection's first batch), the user's named once its
/// text is seen again; a write is followed by DISCARD ALL.
pub(crate) fn encode_session_batch(
    connection: &mut Connection,
    steps: &Steps<'_>,
    identity: &[Option<&str>],
    user: &UserStatement,
    sql: &str,
    params: &[Option<&str>],
    row_limit: i32,
) -> Result<(), WireError> {
    use crate::wire::{encode_prepare, encode_run_prepared, encode_step, encode_sync};
    let prepare_fixed = !connection.statements.fixed_ready;
    let buf = connection.buffer();
    if prepare_fixed {
        // Parse errors would surface as step 0's; they do not happen.
        for (name, sql, param_count) in NAMED_STATEMENTS {
            encode_prepare(name, sql, param_count, buf)?;
        }
    }
    for evicted in &user.evict {
        crate::wire::encode_close_statement(evicted, buf)?;
    }
    encode_run_prepared(steps.begin, &[], 0, false, buf)?;
    encode_run_prepared(steps.set_role, steps.set_role_params, 0, false, buf)?;
    if user.parse {
        encode_prepare(&user.name, sql, params.len(), buf)?;
    }
    encode_run_prepared(&user.name, params, row_limit, true, buf)?;
    encode_step(sql::GUARD, identity, 0, false, buf)?;
    encode_run_prepared(steps.end, &[], 0, false, buf)?;
    encode_sync(buf);
    if !steps.read_only {
        crate::wire::encode_query(sql::DISCARD_ALL, buf)?;
    }
    Ok(())
}

/// Encodes the batch behind a transaction-mode pooler: every statement
/// unnamed (a named one would exist on one server session only), the
/// per-transaction settings with the role, and DISCARD ALL before the
/// Sync, so that the server session goes back to the pool clean: until
/// the ReadyForQuery the pooler keeps it ours.
pub(crate) fn encode_pooled_batch(
    connection: &mut Connection,
    steps: &Steps<'_>,
    identity: &[Option<&str>],
    sql: &str,
    params: &[Option<&str>],
    row_limit: i32,
) -> Result<(), WireError> {
    use crate::wire::{encode_query, encode_step, encode_sync};
    let buf = connection.buffer();
    // The committed clean-up of whatever an earlier transaction left, then
    // the call's transaction (sql::BEGIN_READ_POOLED); its ReadyForQuery
    // says "in a transaction", so the pooler keeps the server session ours.
    encode_query(steps.begin, buf)?;
    encode_step(steps.set_role, steps.set_role_params, 0, false, buf)?;
    encode_step(sql, params, row_limit, true, buf)?;
    encode_step(sql::GUARD, identity, 0, false, buf)?;
    encode_step(steps.end, &[], 0, false, buf)?;
    encode_step(sql::DISCARD_ALL, &[], 0, false, buf)?;
    encode_sync(buf);
    Ok(())
}
