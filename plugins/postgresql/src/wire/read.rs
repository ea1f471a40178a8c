//! Reading backend messages without ever holding more than a bound.
//!
//! A message announces its length in its first five bytes. A data row
//! longer than its reader wants ([`RowSink::row_limit`]), and any other
//! message longer than [`MAX_OTHER_MESSAGE`] (a notice or an error a
//! function raised with a huge text), is passed over in pieces instead of
//! being buffered whole: a one-gigabyte value costs 64 KiB of memory to
//! skip. The buffer shrinks back after a large message. Any read error
//! leaves the connection marked broken: its state is unknown.

use std::io::{self, Read};

use postgres_protocol::message::backend::{DataRowBody, Message};

use super::{Column, Connection, DbError, WireError};

/// What the buffer starts with and shrinks back to.
pub(super) const INITIAL_BUFFER: usize = 16 * 1024;
/// A buffer whose capacity grew past this (for one large message) is
/// replaced once it is nearly empty again.
const SHRINK_ABOVE: usize = 1024 * 1024;
/// The largest message other than a data row that is read whole.
pub const MAX_OTHER_MESSAGE: usize = 1024 * 1024;
/// How much of a skipped message is read at a time.
const SKIP_CHUNK: usize = 64 * 1024;
/// The most read from the socket at once into the buffer.
const MAX_READ_CHUNK: usize = 4 * 1024 * 1024;

/// Whether the reader goes on after a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop reading now: the caller cancels the statement and drops the
    /// connection (its state is unknown).
    Abandon,
}

/// Where the rows of a batch's captured step go, as they arrive.
pub trait RowSink {
    /// The captured statement's columns (before its first row).
    fn columns(&mut self, columns: &[Column]);
    /// The longest data row message (bytes on the wire) the sink wants
    /// whole; longer ones are skipped and reported to [`RowSink::oversized`].
    fn row_limit(&self) -> usize;
    fn row(&mut self, row: &DataRowBody) -> Result<Flow, WireError>;
    /// A row of `wire_len` bytes was skipped unread.
    fn oversized(&mut self, wire_len: usize) -> Flow;
}

/// One backend message, or what was skipped in its place.
pub(super) enum Incoming {
    Message(Message),
    /// A data row longer than the limit, passed over.
    SkippedRow(usize),
    /// An error response too long to read: its text is lost.
    SkippedError,
    /// A notice, parameter status or notification too long to read.
    Skipped,
}

/// The error in place of one too long to read.
pub(super) fn oversized_error() -> DbError {
    DbError {
        code: "54000".to_owned(),
        message: format!(
            "the server sent an error message longer than {MAX_OTHER_MESSAGE} bytes; \
             its text was not read"
        ),
        ..DbError::default()
    }
}

impl Connection {
    /// Buffers at least `wanted` bytes.
    fn fill(&mut self, wanted: usize) -> Result<(), WireError> {
        if wanted > INITIAL_BUFFER {
            self.buffer_grew = true;
        }
        while self.read_buf.len() < wanted {
            let start = self.read_buf.len();
            let chunk = (wanted - start).clamp(INITIAL_BUFFER, MAX_READ_CHUNK);
            self.read_buf.resize(start + chunk, 0);
            match self.stream.read(&mut self.read_buf[start..]) {
                Ok(0) => {
                    self.read_buf.truncate(start);
                    return Err(self.fail(WireError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))));
                }
                Ok(read) => self.read_buf.truncate(start + read),
                Err(err) => {
                    self.read_buf.truncate(start);
                    return Err(self.fail(WireError::Io(err)));
                }
            }
        }
        Ok(())
    }

    /// Marks the connection broken and passes the error on. A read that
    /// timed out also cancels the statement still running on the server.
    pub(super) fn fail(&mut self, error: WireError) -> WireError {
        self.broken = true;
        if let WireError::Io(err) = &error {
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                if let Some(key) = self.cancel {
                    key.cancel(std::time::Duration::from_secs(5));
                }
            }
        }
        error
    }

    /// Drops `total` bytes of message, buffered or not, keeping none.
    fn skip(&mut self, total: usize) -> Result<(), WireError> {
        let buffered = total.min(self.read_buf.len());
        let _ = self.read_buf.split_to(buffered);
        let mut left = total - buffered;
        let mut scratch = vec![0u8; SKIP_CHUNK.min(left.max(1))];
        while left > 0 {
            let want = left.min(scratch.len());
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => {
                    return Err(self.fail(WireError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))))
                }
                Ok(read) => left -= read,
                Err(err) => return Err(self.fail(WireError::Io(err))),
            }
        }
        Ok(())
    }

    /// A fresh small buffer once a large one has been read out (also at
    /// the end of every request: an idle pooled connection must not keep a
    /// large result's buffer).
    pub(super) fn shrink(&mut self) {
        // A message split off the buffer shares its allocation: the
        // buffer's own capacity does not show how large that is, so a
        // flag remembers that it grew.
        let grown = self.buffer_grew || self.read_buf.capacity() > SHRINK_ABOVE;
        if grown && self.read_buf.len() <= INITIAL_BUFFER {
            let mut fresh = bytes::BytesMut::with_capacity(INITIAL_BUFFER);
            fresh.extend_from_slice(&self.read_buf);
            self.read_buf = fresh;
            self.buffer_grew = false;
        }
    }

    /// The next message; a data row longer than `row_limit` bytes and any
    /// other message longer than [`MAX_OTHER_MESSAGE`] are skipped.
    pub(super) fn next_message(&mut self, row_limit: usize) -> Result<Incoming, WireError> {
        self.shrink();
        self.fill(5)?;
        let kind = self.read_buf[0];
        let length = u32::from_be_bytes([
            self.read_buf[1],
            self.read_buf[2],
            self.read_buf[3],
            self.read_buf[4],
        ]) as usize;
        if length < 4 {
            return Err(self.fail(WireError::Protocol("invalid message length".into())));
        }
        let total = length + 1;
        let limit = if kind == b'D' {
            row_limit
        } else {
            MAX_OTHER_MESSAGE
        };
        if total > limit {
            let skipped = match kind {
                b'D' => Incoming::SkippedRow(total),
                b'E' => Incoming::SkippedError,
                b'N' | b'S' | b'A' => Incoming::Skipped,
                _ => {
                    return Err(self.fail(WireError::Protocol(format!(
                        "a '{}' message of {total} bytes",
                        kind as char
                    ))))
                }
            };
            self.skip(total)?;
            return Ok(skipped);
        }
        self.fill(total)?;
        match Message::parse(&mut self.read_buf) {
            Ok(Some(message)) => Ok(Incoming::Message(message)),
            Ok(None) => Err(self.fail(WireError::Protocol("incomplete message".into()))),
            Err(err) => Err(self.fail(WireError::Protocol(err.to_string()))),
        }
    }

    /// The next message, whatever its size up to the bounds (start-up and
    /// our own small queries).
    pub(super) fn read_message(&mut self) -> Result<Message, WireError> {
        loop {
            match self.next_message(MAX_OTHER_MESSAGE)? {
                Incoming::Message(message) => return Ok(message),
                Incoming::SkippedError => {
                    return Err(self.fail(WireError::Db(oversized_error())));
                }
                Incoming::SkippedRow(_) => {
                    return Err(self.fail(WireError::Protocol(
                        "a row larger than this reader takes".into(),
                    )));
                }
                Incoming::Skipped => {}
            }
        }
    }
}
