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

use bytes::BytesMut;
use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend;

use super::message::{columns_of, db_error, owned_row, Column, DbError};
use super::read::{oversized_error, Flow, Incoming, RowSink};
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

/// What a batch produced besides the captured rows (those went to the
/// [`RowSink`]).
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Steps that ran to completion, in order, with their command tags
    /// (`None`: suspended at the row limit, or an empty statement).
    pub completed: Vec<Option<String>>,
    /// The first error and the index of the step it belongs to.
    pub error: Option<(usize, DbError)>,
    /// The first row of the probed step, if it sent one.
    pub probe_row: Option<Vec<Option<String>>>,
    /// `I` idle, `T` in a transaction, `E` in a failed transaction.
    pub transaction_status: u8,
    /// The sink asked to stop: the batch was not read to its end, and the
    /// connection is marked broken.
    pub abandoned: bool,
}

/// The longest row the probed step (our guard) may send.
const PROBE_ROW_LIMIT: usize = 64 * 1024;

impl Connection {
    /// Reads a batch's responses up to its ReadyForQuery, handing the rows
    /// of step `capture` to `sink` and keeping the first row of step
    /// `probe`. Any error leaves the connection marked broken.
    pub fn read_batch(
        &mut self,
        capture: usize,
        sink: &mut dyn RowSink,
        probe: Option<usize>,
    ) -> Result<BatchResult, WireError> {
        let result = self.read_batch_inner(capture, sink, probe);
        if result.as_ref().map_or(true, |batch| batch.abandoned) {
            self.broken = true;
        }
        self.shrink();
        result
    }

    fn read_batch_inner(
        &mut self,
        capture: usize,
        sink: &mut dyn RowSink,
        probe: Option<usize>,
    ) -> Result<BatchResult, WireError> {
        let mut result = BatchResult::default();
        loop {
            let step = result.completed.len();
            let row_limit = if step == capture {
                sink.row_limit()
            } else {
                PROBE_ROW_LIMIT
            };
            let message = match self.next_message(row_limit)? {
                Incoming::Message(message) => message,
                Incoming::SkippedRow(wire_len) if step == capture => {
                    if sink.oversized(wire_len) == Flow::Abandon {
                        result.abandoned = true;
                        return Ok(result);
                    }
                    continue;
                }
                Incoming::SkippedRow(_) => {
                    return Err(WireError::Protocol(
                        "an oversized row from one of our own statements".into(),
                    ))
                }
                Incoming::SkippedError => {
                    if result.error.is_none() {
                        result.error = Some((step, oversized_error()));
                    }
                    continue;
                }
                Incoming::Skipped => continue,
            };
            match message {
                Message::RowDescription(body) if step == capture => {
                    sink.columns(&columns_of(&body)?);
                }
                Message::DataRow(body) => {
                    if step == capture {
                        if sink.row(&body)? == Flow::Abandon {
                            result.abandoned = true;
                            return Ok(result);
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

/// A sink that keeps every row as owned strings, up to a byte budget (our
/// catalog queries; small by nature, bounded all the same).
#[derive(Debug, Default)]
pub struct CollectRows {
    pub rows: Vec<Vec<Option<String>>>,
    bytes: usize,
    budget: usize,
    /// The rows did not fit the budget.
    pub overflowed: bool,
}

impl CollectRows {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }
}

impl RowSink for CollectRows {
    fn columns(&mut self, _columns: &[Column]) {}

    fn row_limit(&self) -> usize {
        if self.overflowed {
            0
        } else {
            self.budget.saturating_sub(self.bytes)
        }
    }

    fn row(&mut self, row: &DataRowBody) -> Result<Flow, WireError> {
        self.bytes += row.buffer().len();
        if self.bytes > self.budget {
            self.overflowed = true;
        } else {
            self.rows.push(owned_row(row)?);
        }
        Ok(Flow::Continue)
    }

    fn oversized(&mut self, _wire_len: usize) -> Flow {
        self.overflowed = true;
        Flow::Continue
    }
}
