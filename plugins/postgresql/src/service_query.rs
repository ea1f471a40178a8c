//! The module's own queries as the service account, outside a call: the
//! identity check, type names, the service-account profile, the list of
//! functions, the health check.
//!
//! On a session of our own they run as they are. Behind a transaction-mode
//! pooler the server session is shared with every user's calls and may
//! carry what a hostile call left there (a role, a short statement
//! timeout, temporary objects): each query then runs after the committed
//! clean-up every call gets ([`crate::sql::service_begin_pooled`]), in a
//! read-only transaction with the module's statement timeout, rolled back.
//! A query that fails there drops the connection, so that the pooler closes
//! that server session; a clean-up that fails is reported as a lost
//! connection (nothing ran).

use crate::wire::WireError;
use crate::wire::{encode_query, encode_step, encode_sync, Connection, GroupResult, Pooling};

/// `sql` without parameters (a simple query on a session of our own).
pub fn simple(connection: &mut Connection, sql: &str) -> Result<GroupResult, WireError> {
    match connection.pooling() {
        Pooling::Session => connection.simple_query(sql),
        Pooling::Transaction => pooled(connection, sql, &[]),
    }
}

/// `sql` with untyped text parameters.
pub fn with_params(
    connection: &mut Connection,
    sql: &str,
    params: &[Option<&str>],
) -> Result<GroupResult, WireError> {
    match connection.pooling() {
        Pooling::Session => connection.query_params(sql, params),
        Pooling::Transaction => pooled(connection, sql, params),
    }
}

fn pooled(
    connection: &mut Connection,
    sql: &str,
    params: &[Option<&str>],
) -> Result<GroupResult, WireError> {
    let begin = crate::sql::service_begin_pooled(&connection.session_defaults().statement_timeout);
    let buf = connection.buffer();
    encode_query(&begin, buf)?;
    encode_step(sql, params, 0, false, buf)?;
    encode_step(crate::sql::ROLLBACK, &[], 0, false, buf)?;
    encode_sync(buf);
    connection.flush()?;
    let begun = connection.read_group(0)?;
    let result = connection.read_group(usize::MAX)?;
    if let Some(error) = begun.error {
        // Nothing ran: the connection is dropped (PgBouncer closes the
        // server session), and the caller hears of a lost connection.
        tracing::warn!(
            sqlstate = %error.code,
            "a pooled server session could not be cleaned up before a query of the module's own; dropping the connection"
        );
        connection.mark_broken();
        return Err(WireError::Protocol(format!(
            "the pooled server session could not be cleaned up ({}); dropped",
            error.code
        )));
    }
    if result.error.is_some() || result.transaction_status != b'I' {
        connection.mark_broken();
    }
    Ok(result)
}
