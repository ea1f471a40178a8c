//! A small synchronous PostgreSQL wire-protocol client (v3), built on
//! `postgres-protocol`'s message codecs.
//!
//! Why our own instead of the `postgres` crate: the delegated transaction
//! must be *pipelined* (everything written at once, one round trip), take
//! parameters exactly like node-postgres (untyped, in text format, so the
//! server infers their types), read results in text format (so every type,
//! including enums, domains and extension types, has a faithful text form),
//! and stop reading a result after `maxRows` (Execute with a row limit). The
//! `postgres` crate fixes binary results and a prepare round trip.

mod connect;
mod message;
mod pipeline;
mod statements;
pub mod tls;

use std::time::Instant;

use bytes::BytesMut;
pub use connect::ConnectParams;
pub use message::{encode_query, encode_run_prepared, encode_step, Column, DbError, GroupResult};
pub use pipeline::{encode_close_statement, encode_prepare, encode_sync, TextRows};
pub use statements::SessionStatements;

/// Everything that can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Db(DbError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the server asked for an authentication method this client does not support ({0})")]
    UnsupportedAuth(&'static str),
    #[error("a password is required but none is configured")]
    PasswordMissing,
}

/// One server connection. Not thread-safe; the pool hands it to one caller
/// at a time.
pub struct Connection {
    stream: connect::Stream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Set when the connection's state is unknown: r2d2 then drops it.
    broken: bool,
    /// The named statements that exist on this session.
    pub statements: SessionStatements,
    last_used: Instant,
}

impl Connection {
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    pub fn idle_for(&self) -> std::time::Duration {
        self.last_used.elapsed()
    }

    /// The buffer requests are encoded into before [`Connection::flush`].
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Sends everything buffered in one write.
    pub fn flush(&mut self) -> Result<(), WireError> {
        use std::io::Write;
        self.last_used = Instant::now();
        let result = self
            .stream
            .write_all(&self.write_buf)
            .and_then(|()| self.stream.flush());
        self.write_buf.clear();
        result.map_err(|err| {
            self.broken = true;
            WireError::Io(err)
        })
    }

    /// Runs one simple-protocol query (our own SQL only) and returns its
    /// result; the error of a failed statement is in `GroupResult::error`.
    pub fn simple_query(&mut self, sql: &str) -> Result<GroupResult, WireError> {
        message::encode_query(sql, &mut self.write_buf)?;
        self.flush()?;
        self.read_group(usize::MAX)
    }

    /// Runs our own parameterised SQL (extended protocol, text parameters
    /// of inferred types, text results).
    pub fn query_params(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
    ) -> Result<GroupResult, WireError> {
        message::encode_extended(sql, params, 0, &mut self.write_buf)?;
        self.flush()?;
        self.read_group(usize::MAX)
    }
}
