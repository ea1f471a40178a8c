//! Several extended-protocol statements ("steps") sent as one batch that ends
//! in a single Sync, and the reader that attributes each response to its
//! step.
//!
//! Why one Sync: PostgreSQL flushes its output at every ReadyForQuery, so
//! every Sync (or simple Query) in a batch is one more TCP send on the
//! server and one more wake-up of the reading thread here. Measured on the
//! delegated transaction (five sync points → one): fewer context switches
//! on both sides and less server CPU per call (docs/benchmarks.md).
//!
//! Semantics the callers rely on: after an error the server skips every
//! message up to the Sync, so the steps after a failed one never run; and
//! the error is reported with the index of the step that failed.

use std::ops::Range;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::message::{columns_of, db_error, owned_row, Column, DbError};
use super::{Connection, WireError};

/// Parse of a named statement (parameter types inferred), to be run later
/// with [`super::encode_run_prepared`]. Named statements outlive transactions; a
/// `DISCARD ALL` removes them.
pub fn encode_prepare(
    name: &str,
    sql: &str,
    param_count: usize,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    frontend::parse(name, sql, std::iter::repeat_n(0u32, param_count), buf)?;
    Ok(())
}

/// Close of a named statement (its CloseComplete is skipped by the reader).
pub fn encode_close_statement(name: &str, buf: &mut BytesMut) -> Result<(), WireError> {
    frontend::close(b'S', name, buf)?;
    Ok(())
}

/// Ends a batch: the server answers with ReadyForQuery.
pub fn encode_sync(buf: &mut BytesMut) {
    frontend::sync(buf);
}

/// Text values of a result, kept in one buffer (no allocation per value).
#[derive(Debug, Default)]
pub struct TextRows {
    bytes: Vec<u8>,
    /// Per value: its byte range, `None` for SQL NULL.
    cells: Vec<Option<Range<u32>>>,
    /// Where each row starts in `cells`.
    row_starts: Vec<u32>,
}

impl TextRows {
    pub fn len(&self) -> usize {
        self.row_starts.len()
    }

    /// Bytes of all values together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The values of row `index` (lossy UTF-8: the session is UTF8).
    pub fn row(&self, index: usize) -> impl Iterator<Item = Option<std::borrow::Cow<'_, str>>> {
        let start = self.row_starts.get(index).map_or(0, |&s| s as usize);
        let end = self
            .row_starts
            .get(index + 1)
            .map_or(self.cells.len(), |&s| s as usize);
        self.cells[start..end].iter().map(|cell| {
            cell.as_ref().map(|range| {
                String::from_utf8_lossy(&self.bytes[range.start as usize..range.end as usize])
            })
        })
    }

    /// Owned copies, for callers that keep rows around (catalog tools).
    pub fn to_owned_rows(&self) -> Vec<Vec<Option<String>>> {
        (0..self.len())
            .map(|i| self.row(i).map(|v| v.map(|v| v.into_owned())).collect())
            .collect()
    }

    /// Rows from plain values (tests).
    #[cfg(test)]
    pub fn from_values(rows: &[Vec<Option<&str>>]) -> Self {
        let mut out = Self::default();
        for row in rows {
            out.row_starts.push(out.cells.len() as u32);
            for value in row {
                out.cells.push(value.map(|text| {
                    let start = out.bytes.len() as u32;
                    out.bytes.extend_from_slice(text.as_bytes());
                    start..out.bytes.len() as u32
                }));
            }
        }
        out
    }

    fn push_row(
        &mut self,
        buffer: &[u8],
        ranges: &mut postgres_protocol::message::backend::DataRowRanges<'_>,
    ) -> Result<(), WireError> {
        let too_big = || WireError::Protocol("a result larger than 4 GiB".into());
        self.row_starts
            .push(u32::try_from(self.cells.len()).map_err(|_| too_big())?);
        while let Some(range) = ranges.next().map_err(WireError::Io)? {
            let cell = match range {
                None => None,
                Some(range) => {
                    let start = u32::try_from(self.bytes.len()).map_err(|_| too_big())?;
                    self.bytes.extend_from_slice(&buffer[range]);
                    let end = u32::try_from(self.bytes.len()).map_err(|_| too_big())?;
                    Some(start..end)
                }
            };
            self.cells.push(cell);
        }
        Ok(())
    }
}

/// What a batch produced.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Steps that ran to completion, in order, with their command tags
    /// (`None`: suspended at the row limit, or an empty statement).
    pub completed: Vec<Option<String>>,
    /// The first error and the index of the step it belongs to.
    pub error: Option<(usize, DbError)>,
    /// The captured step's columns and rows (at most the row cap).
    pub columns: Vec<Column>,
    pub rows: TextRows,
    /// Rows the captured step sent, kept or not.
    pub rows_seen: usize,
    /// The first row of the probed step, if it sent one.
    pub probe_row: Option<Vec<Option<String>>>,
    /// `I` idle, `T` in a transaction, `E` in a failed transaction.
    pub transaction_status: u8,
}

impl Connection {
    /// Reads a batch's responses up to its ReadyForQuery, keeping the rows
    /// of step `capture` (at most `row_cap`) and the first row of step
    /// `probe`.
    pub fn read_batch(
        &mut self,
        capture: usize,
        row_cap: usize,
        probe: Option<usize>,
    ) -> Result<BatchResult, WireError> {
        let mut result = BatchResult::default();
        loop {
            let step = result.completed.len();
            match self.read_message()? {
                Message::RowDescription(body) if step == capture => {
                    result.columns = columns_of(&body)?;
                }
                Message::DataRow(body) => {
                    if step == capture {
                        result.rows_seen += 1;
                        if result.rows.len() < row_cap {
                            result.rows.push_row(body.buffer(), &mut body.ranges())?;
                        }
                    } else if Some(step) == probe && result.probe_row.is_none() {
                        result.probe_row = Some(owned_row(&body)?);
                    }
                }
                Message::CommandComplete(body) => {
                    let tag = body.tag().map_err(WireError::Io)?.to_owned();
                    result.completed.push(Some(tag));
                }
                Message::PortalSuspended | Message::EmptyQueryResponse => {
                    result.completed.push(None);
                }
                Message::ErrorResponse(body) => {
                    if result.error.is_none() {
                        result.error = Some((step, db_error(&body)?));
                    }
                }
                Message::ReadyForQuery(body) => {
                    result.transaction_status = body.status();
                    return Ok(result);
                }
                other => self.pass_over(&other)?,
            }
        }
    }
}
