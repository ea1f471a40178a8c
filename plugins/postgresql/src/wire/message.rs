//! Encoding requests and reading one request's responses ("group": every
//! message up to and including ReadyForQuery).

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{
    DataRowBody, ErrorResponseBody, Message, ParameterStatusBody, RowDescriptionBody,
};
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

use super::{Connection, WireError};

/// The text-format code on the wire.
const TEXT: i16 = 0;

/// A server error, as sent (`ErrorResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub position: Option<u32>,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)
    }
}

pub(super) fn db_error(body: &ErrorResponseBody) -> Result<DbError, WireError> {
    let mut error = DbError::default();
    let mut fields = body.fields();
    while let Some(field) = fields.next().map_err(WireError::Io)? {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            b'P' => error.position = value.parse().ok(),
            _ => {}
        }
    }
    Ok(error)
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// What one of our own requests produced (users' statements go through
/// `pipeline`).
#[derive(Debug, Default)]
pub struct GroupResult {
    /// Text values; at most the row cap the reader was given.
    pub rows: Vec<Vec<Option<String>>>,
    pub error: Option<DbError>,
    /// `I` idle, `T` in a transaction, `E` in a failed transaction.
    pub transaction_status: u8,
}

pub fn encode_query(sql: &str, buf: &mut BytesMut) -> Result<(), WireError> {
    frontend::query(sql, buf).map_err(WireError::Io)
}

/// Parse (parameter types unspecified: the server infers them) + Bind
/// (parameters and results in text format) + Describe + Execute (at most
/// `max_rows`, 0 = all) + Sync, for the unnamed statement and portal.
pub fn encode_extended(
    sql: &str,
    params: &[Option<&str>],
    max_rows: i32,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    encode_step(sql, params, max_rows, true, buf)?;
    frontend::sync(buf);
    Ok(())
}

/// Parse + Bind (+ Describe when `describe`) + Execute of one statement,
/// unnamed, without Sync: one step of a batch ([`encode_extended`] without
/// the Sync).
pub fn encode_step(
    sql: &str,
    params: &[Option<&str>],
    max_rows: i32,
    describe: bool,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    frontend::parse("", sql, std::iter::repeat_n(0u32, params.len()), buf)?;
    encode_run_prepared("", params, max_rows, describe, buf)
}

/// Bind (text in and out) of statement `name` to the unnamed portal,
/// Describe when asked, and Execute (at most `max_rows`, 0 = all), no
/// Sync: one step of a batch.
pub fn encode_run_prepared(
    name: &str,
    params: &[Option<&str>],
    max_rows: i32,
    describe: bool,
    buf: &mut BytesMut,
) -> Result<(), WireError> {
    if params.len() > i16::MAX as usize {
        return Err(WireError::Protocol("too many parameters".into()));
    }
    let bound = frontend::bind(
        "",
        name,
        std::iter::once(TEXT),
        params.iter(),
        |param, buf| match param {
            Some(text) => {
                buf.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        },
        std::iter::once(TEXT),
        buf,
    );
    if let Err(err) = bound {
        let message = match err {
            frontend::BindError::Conversion(err) => err.to_string(),
            frontend::BindError::Serialization(err) => err.to_string(),
        };
        return Err(WireError::Protocol(message));
    }
    if describe {
        frontend::describe(b'P', "", buf)?;
    }
    frontend::execute("", max_rows, buf)?;
    Ok(())
}

/// A result's column descriptions.
pub(super) fn columns_of(body: &RowDescriptionBody) -> Result<Vec<Column>, WireError> {
    let mut columns = Vec::new();
    let mut fields = body.fields();
    while let Some(field) = fields.next().map_err(WireError::Io)? {
        columns.push(Column {
            name: field.name().to_owned(),
            type_oid: field.type_oid(),
        });
    }
    Ok(columns)
}

/// One row's values as owned strings (lossy UTF-8: the session is UTF8).
pub(super) fn owned_row(body: &DataRowBody) -> Result<Vec<Option<String>>, WireError> {
    let buffer = body.buffer();
    let mut ranges = body.ranges();
    let mut row = Vec::new();
    while let Some(range) = ranges.next().map_err(WireError::Io)? {
        row.push(range.map(|range| String::from_utf8_lossy(&buffer[range]).into_owned()));
    }
    Ok(row)
}

/// False for a reported setting the module relies on being as it set it
/// at start-up: backslashes read literally in '…' (the policy's lexer
/// does), and UTF-8 text.
pub(super) fn parameter_is_safe(body: &ParameterStatusBody) -> Result<bool, WireError> {
    let name = body.name().map_err(WireError::Io)?;
    let value = body.value().map_err(WireError::Io)?;
    Ok(match name {
        "standard_conforming_strings" => value == "on",
        "client_encoding" => value == "UTF8",
        _ => true,
    })
}

impl Connection {
    /// For messages a reader has no use for: passes over the ones that
    /// carry nothing it needs, and fails (retiring the connection) on the
    /// ones that mean the session is not where we think it is.
    pub(super) fn pass_over(&mut self, message: &Message) -> Result<(), WireError> {
        match message {
            Message::ParseComplete
            | Message::BindComplete
            | Message::NoData
            | Message::EmptyQueryResponse
            | Message::RowDescription(_)
            | Message::ParameterDescription(_)
            | Message::CloseComplete
            | Message::NoticeResponse(_)
            | Message::NotificationResponse(_) => Ok(()),
            Message::ParameterStatus(body) => {
                if parameter_is_safe(body)? {
                    Ok(())
                } else {
                    // A statement changed how the server reads SQL or
                    // sends text: nothing after it on this session is safe.
                    self.mark_broken();
                    Err(WireError::Protocol(
                        "a statement changed standard_conforming_strings or client_encoding".into(),
                    ))
                }
            }
            Message::CopyInResponse(_) | Message::CopyOutResponse(_) => {
                // COPY is refused by the policy before it gets here; if it
                // ever does, the connection's state is unknown.
                self.mark_broken();
                Err(WireError::Protocol("unexpected COPY".into()))
            }
            _ => {
                self.mark_broken();
                Err(WireError::Protocol("unexpected message".into()))
            }
        }
    }

    /// Reads one request's responses up to ReadyForQuery, keeping at most
    /// `row_cap` rows (the rest of a simple query's rows are dropped). Any
    /// error leaves the connection marked broken.
    pub fn read_group(&mut self, row_cap: usize) -> Result<GroupResult, WireError> {
        let result = self.read_group_inner(row_cap);
        if result.is_err() {
            self.broken = true;
        }
        self.shrink();
        result
    }

    fn read_group_inner(&mut self, row_cap: usize) -> Result<GroupResult, WireError> {
        let mut result = GroupResult::default();
        loop {
            match self.read_message()? {
                Message::DataRow(body) => {
                    if result.rows.len() < row_cap {
                        result.rows.push(owned_row(&body)?);
                    }
                }
                Message::CommandComplete(_) | Message::PortalSuspended => {}
                Message::ErrorResponse(body) => {
                    // The first error is the one that matters; the server
                    // skips the rest of the request until Sync.
                    if result.error.is_none() {
                        result.error = Some(db_error(&body)?);
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
