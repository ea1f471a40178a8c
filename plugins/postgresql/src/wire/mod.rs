//! A small synchronous PostgreSQL wire-protocol client (v3), built on
//! `postgres-protocol`'s message codecs.
//!
//! Why our own instead of the `postgres` crate: the delegated transaction
//! must be *pipelined* (everything written at once, one round trip), take
//! parameters exactly like node-postgres (untyped, in text format, so the
//! server infers their types), read results in text format (so every type,
//! including enums, domains and extension types, has a faithful text form),
//! stop reading a result after `maxRows` (Execute with a row limit), and
//! hand rows to the caller as they arrive, never holding more of a result
//! than the caller's byte budget ([`RowSink`]). The `postgres` crate fixes
//! binary results, a prepare round trip and whole results in memory.
//!
//! Layers: `connect` (TCP/TLS, startup, authentication that cannot be
//! downgraded), `read` (bounded reading of backend messages), `message`
//! (encoding requests; one request's responses), `pipeline` (batches of
//! steps under one Sync), `statements` (named statements on the session),
//! `tls` (rustls from `options.ssl`).

mod connect;
#[cfg(test)]
mod fuzz;
mod message;
mod pipeline;
mod read;
mod statements;
pub mod tls;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
pub use connect::{AuthMethod, ConnectParams, Pooling};
pub use message::{encode_query, encode_run_prepared, encode_step, Column, DbError, GroupResult};
pub use pipeline::{encode_close_statement, encode_prepare, encode_sync, BatchResult, CollectRows};
pub use read::{Flow, RowSink};
pub use statements::{SessionStatements, UserStatement};

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
    #[error("refused to authenticate: {0} (options.requireAuth)")]
    AuthRefused(String),
    #[error("a password is required but none is configured")]
    PasswordMissing,
}

/// What it takes to cancel the statement running on a connection: the
/// server's address and the key it sent at start-up (BackendKeyData).
#[derive(Debug, Clone, Copy)]
pub struct CancelKey {
    address: SocketAddr,
    process_id: i32,
    secret_key: i32,
}

impl CancelKey {
    /// Sends a CancelRequest on a new connection (plain TCP, as libpq
    /// does: the server reads it before any authentication). Best effort.
    pub fn cancel(&self, timeout: std::time::Duration) {
        use std::io::Write;
        let mut request = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(
            self.process_id,
            self.secret_key,
            &mut request,
        );
        let sent = std::net::TcpStream::connect_timeout(&self.address, timeout)
            .and_then(|mut stream| stream.write_all(&request));
        if let Err(err) = sent {
            tracing::warn!(error = %err, "could not send a cancel request");
        }
    }
}

/// Session defaults the module relies on that are its own per module:
/// start-up parameters on a session of our own, set in every transaction
/// behind a pooler.
#[derive(Debug)]
pub struct SessionDefaults {
    /// `statement_timeout` in milliseconds, as text.
    pub statement_timeout: Box<str>,
    pub application_name: Box<str>,
}

/// One server connection. Not thread-safe; the pool hands it to one caller
/// at a time.
pub struct Connection {
    stream: connect::Stream,
    read_buf: BytesMut,
    /// `read_buf` was grown for a large message (see `read::shrink`).
    buffer_grew: bool,
    write_buf: BytesMut,
    /// Set when the connection's state is unknown: r2d2 then drops it.
    broken: bool,
    /// The named statements that exist on this session.
    pub statements: SessionStatements,
    pooling: Pooling,
    /// Shared, so that a batch behind a pooler, which sends them in every
    /// transaction, takes them without copying.
    defaults: std::sync::Arc<SessionDefaults>,
    last_used: Instant,
    cancel: Option<CancelKey>,
    /// The server's major version (`server_version` at start-up).
    server_major: u32,
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

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    pub fn session_defaults(&self) -> std::sync::Arc<SessionDefaults> {
        self.defaults.clone()
    }

    pub fn server_major(&self) -> u32 {
        self.server_major
    }

    pub fn cancel_key(&self) -> Option<CancelKey> {
        self.cancel
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
