//! A statement's result, written as JSON while its rows arrive, never
//! larger than the module's `maxResultBytes`.
//!
//! The [`ResultWriter`] is the batch reader's [`RowSink`] for the caller's
//! statement: each row goes straight from the socket buffer into the JSON
//! text of the result, so a result costs its JSON and nothing besides. Once
//! the next row would not fit, the rows after it are read and dropped
//! (the guard after the statement must still run and be checked before a
//! row is returned); a read that would drop more than [`DRAIN_LIMIT`] is
//! abandoned instead, and the statement cancelled. A first row that does
//! not fit at all is an error, not an empty result.

use std::fmt::Write as _;

use postgres_protocol::message::backend::DataRowBody;
use serde_json::{json, Value};

use crate::values::{write_json, Shape, TypeCache, TypeInfo};
use crate::wire::{Column, Flow, RowSink, WireError};

/// Room kept for what follows the rows (`],"command":…}`).
const SUFFIX_RESERVE: usize = 256;
/// Bytes of rows a read drops after the budget is reached, to see its
/// guard through, before it gives up and cancels.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Why rows are missing from a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    Rows,
    Bytes,
}

/// A column: its key in a row object, and how its values become JSON.
struct Plan {
    /// `"name":`, JSON-escaped.
    key: Vec<u8>,
    /// The column whose value the key takes (a repeated name keeps its
    /// first position and its last value, as a JSON object built key by
    /// key would).
    column: usize,
}

pub struct ResultWriter<'a> {
    types: &'a TypeCache,
    /// Looks up column types that are not built in (on another connection:
    /// this one is busy reading the result).
    resolve: &'a mut dyn FnMut(&[u32]),
    out: Vec<u8>,
    plan: Vec<Plan>,
    shapes: Vec<Shape>,
    budget: usize,
    max_rows: u64,
    rows: u64,
    truncated: Option<Truncation>,
    /// The first row alone is larger than the budget.
    too_large: bool,
    dropped_bytes: u64,
    /// A read may be abandoned (cancelled); a write is always read to its
    /// end, so that its outcome is known.
    may_abandon: bool,
    /// Byte ranges of the current row's values (reused).
    cells: Vec<Option<std::ops::Range<usize>>>,
}

impl<'a> ResultWriter<'a> {
    pub fn new(
        types: &'a TypeCache,
        resolve: &'a mut dyn FnMut(&[u32]),
        budget: usize,
        max_rows: u64,
        may_abandon: bool,
    ) -> Self {
        Self {
            types,
            resolve,
            out: Vec::new(),
            plan: Vec::new(),
            shapes: Vec::new(),
            budget,
            max_rows,
            rows: 0,
            truncated: None,
            too_large: false,
            dropped_bytes: 0,
            may_abandon,
            cells: Vec::new(),
        }
    }

    /// The statement returned columns (it is a query, not a bare write).
    pub fn has_columns(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn too_large(&self) -> bool {
        self.too_large
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether the result was cut (by `maxRows` or `maxResultBytes`).
    pub fn truncated(&self) -> bool {
        self.truncated.is_some()
    }

    /// The result object's JSON: `{"columns", "rows", "command", "rowCount",
    /// "truncated"[, "truncatedBy"]}`.
    pub fn finish(mut self, command: &str) -> String {
        self.out.extend_from_slice(b"],\"command\":");
        let _ = serde_json::to_writer(&mut self.out, command);
        let _ = write!(
            Utf8Sink(&mut self.out),
            ",\"rowCount\":{},\"truncated\":{}",
            self.rows,
            self.truncated.is_some()
        );
        match self.truncated {
            Some(Truncation::Rows) => self.out.extend_from_slice(b",\"truncatedBy\":\"rows\""),
            Some(Truncation::Bytes) => self.out.extend_from_slice(b",\"truncatedBy\":\"bytes\""),
            None => {}
        }
        self.out.push(b'}');
        // Everything written is JSON text built from UTF-8 strings.
        String::from_utf8(self.out).unwrap_or_default()
    }

    /// A row that does not fit: the first one is an error, a later one
    /// ends the result.
    fn does_not_fit(&mut self, wire_len: usize) -> Flow {
        if self.rows == 0 {
            self.too_large = true;
            return if self.may_abandon {
                Flow::Abandon
            } else {
                Flow::Continue
            };
        }
        self.drop_row(wire_len, Truncation::Bytes)
    }

    fn drop_row(&mut self, wire_len: usize, why: Truncation) -> Flow {
        self.truncated.get_or_insert(why);
        self.dropped_bytes += wire_len as u64;
        if self.may_abandon && self.dropped_bytes > DRAIN_LIMIT {
            Flow::Abandon
        } else {
            Flow::Continue
        }
    }
}

/// The most bytes `write_json` can write for a value of `shape` whose text
/// is `value` (`None`: NULL).
fn json_bound(value: Option<&[u8]>, shape: &Shape) -> usize {
    let Some(text) = value else {
        return 4;
    };
    match shape {
        Shape::Bool => 5,
        // Base64 of the bytes a hex text holds is shorter than the text.
        Shape::Bytea => text.len() + 2,
        Shape::Timestamp | Shape::TimestampTz => text.len() + 8,
        // Elements may gain quotes and escapes: up to six bytes a byte.
        Shape::Array(_) => 6 * text.len() + 2,
        // Numbers are at most their text; strings and invalid JSON are
        // escaped; valid JSON is copied minified.
        Shape::Integer | Shape::Float | Shape::ExactString | Shape::Json | Shape::Text => {
            mcp_delegate_plugin_api::json_text::escaped_len(text) + 2
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Utf8Sink<'b>(&'b mut Vec<u8>);

impl std::fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl RowSink for ResultWriter<'_> {
    fn columns(&mut self, columns: &[Column]) {
        let unknown: Vec<u32> = columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|oid| self.types.get(*oid).is_none())
            .collect();
        if !unknown.is_empty() {
            (self.resolve)(&unknown);
        }
        let mut described = Vec::with_capacity(columns.len());
        self.plan.clear();
        self.shapes.clear();
        for (index, column) in columns.iter().enumerate() {
            let info = self.types.get(column.type_oid).unwrap_or(TypeInfo {
                name: format!("oid:{}", column.type_oid),
                shape: Shape::Text,
            });
            described.push(json!({"name": column.name, "type": info.name}));
            self.shapes.push(info.shape);
            let mut key = Vec::with_capacity(column.name.len() + 3);
            let _ = serde_json::to_writer(&mut key, &column.name);
            key.push(b':');
            match self.plan.iter_mut().find(|plan| plan.key == key) {
                Some(plan) => plan.column = index,
                None => self.plan.push(Plan { key, column: index }),
            }
        }
        self.out.extend_from_slice(b"{\"columns\":");
        let _ = serde_json::to_writer(&mut self.out, &Value::Array(described));
        self.out.extend_from_slice(b",\"rows\":[");
    }

    fn row_limit(&self) -> usize {
        if self.truncated.is_some() || self.too_large {
            return 0;
        }
        // A row's JSON is at least its values' text; its wire form adds 7
        // bytes and 4 a value. A longer message cannot fit.
        let room = self.budget.saturating_sub(self.out.len() + SUFFIX_RESERVE);
        room + 7 + 4 * self.shapes.len()
    }

    fn row(&mut self, row: &DataRowBody) -> Result<Flow, WireError> {
        let wire_len = row.buffer().len() + 7;
        if self.too_large {
            return Ok(self.drop_row(wire_len, Truncation::Bytes));
        }
        if self.truncated.is_some() || self.rows >= self.max_rows {
            return Ok(self.drop_row(wire_len, Truncation::Rows));
        }
        let buffer = row.buffer();
        self.cells.clear();
        let mut ranges = row.ranges();
        while let Some(range) = fallible_iterator::FallibleIterator::next(&mut ranges)? {
            self.cells.push(range);
        }
        // What the row can come to at most, before anything is written: a
        // value may grow (an escaped control character takes six bytes).
        let bound: usize = 3 + self
            .plan
            .iter()
            .map(|plan| {
                let value = self.cells.get(plan.column).cloned().flatten();
                let shape = self.shapes.get(plan.column).unwrap_or(&Shape::Text);
                plan.key.len() + 1 + json_bound(value.map(|range| &buffer[range]), shape)
            })
            .sum::<usize>();
        if self.out.len() + bound + SUFFIX_RESERVE > self.budget {
            return Ok(self.does_not_fit(wire_len));
        }
        let mark = self.out.len();
        if self.rows > 0 {
            self.out.push(b',');
        }
        self.out.push(b'{');
        for (index, plan) in self.plan.iter().enumerate() {
            if index > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(&plan.key);
            let text = self
                .cells
                .get(plan.column)
                .cloned()
                .flatten()
                .map(|range| String::from_utf8_lossy(&buffer[range]));
            let shape = self.shapes.get(plan.column).unwrap_or(&Shape::Text);
            write_json(&mut self.out, text.as_deref(), shape);
        }
        self.out.push(b'}');
        if self.out.len() + SUFFIX_RESERVE > self.budget {
            // The bound held; kept as a second line of defence.
            self.out.truncate(mark);
            return Ok(self.does_not_fit(wire_len));
        }
        self.rows += 1;
        Ok(Flow::Continue)
    }

    fn oversized(&mut self, wire_len: usize) -> Flow {
        if self.truncated.is_some() {
            return self.drop_row(wire_len, Truncation::Bytes);
        }
        self.does_not_fit(wire_len)
    }
}
