//! The statements the properties run on: a corpus and its mutations,
//! token soup, deep nesting, and statements hiding a call in a known place.

use proptest::prelude::*;

use super::super::AllowedFunctions;
use super::corpus::*;
use super::table;

/// A generated statement hiding one never-allowed call.
#[derive(Debug, Clone)]
pub(super) struct Hidden {
    pub(super) sql: String,
    pub(super) function: &'static str,
}

/// The call of a never-allowed built-in: (expression, name, valid in FROM).
pub(super) fn never_call() -> impl Strategy<Value = (String, &'static str, bool)> {
    (
        0..table().never.len(),
        0..NAME_FORMS.len(),
        0..4usize,
        prop::collection::vec(0..ARGS.len(), 0..6),
        0..DECORATIONS.len(),
        any::<bool>(),
        0..ATTRIBUTE_FORMS.len() * 4,
    )
        .prop_map(
            |(row, name_form, extra, args, decoration, named, attribute)| {
                let row = &table().rows[table().never[row]];
                // Attribute notation calls the function with one argument.
                if attribute < ATTRIBUTE_FORMS.len() && row.reaches(1) {
                    return (
                        ATTRIBUTE_FORMS[attribute].replace("{}", row.name),
                        row.name,
                        false,
                    );
                }
                let count = (row.min + extra).min(row.max.unwrap_or(usize::MAX));
                let mut values: Vec<String> = (0..count)
                    .map(|i| args.get(i).map_or("NULL", |&arg| ARGS[arg]).to_owned())
                    .collect();
                if named {
                    if let Some(last) = values.last_mut() {
                        *last = format!("p => {last}");
                    }
                }
                let name = match NAME_FORMS[name_form] {
                    "UPPER" => row.name.to_uppercase(),
                    // Unicode escapes: the parser decodes them.
                    "U&" => format!(
                        "U&\"\\{:04x}{}\"",
                        u32::from(row.name.as_bytes()[0]),
                        &row.name[1..]
                    ),
                    "pg_catalog.U&!" => format!(
                        "pg_catalog.U&\"!{:04x}{}\" UESCAPE '!'",
                        u32::from(row.name.as_bytes()[0]),
                        &row.name[1..]
                    ),
                    form => form.replace("{}", row.name),
                };
                let (template, needs_arg, from_ok) = DECORATIONS[decoration];
                let (template, from_ok) = if needs_arg && count == 0 {
                    ("{f}({a})", true)
                } else {
                    (template, from_ok)
                };
                let call = template
                    .replace("{f}", &name)
                    .replace("{a}", &values.join(", "));
                (call, row.name, from_ok)
            },
        )
}

/// `expression` inside `wrappers`, innermost first. Parentheses keep the
/// grammar happy (`a IS NULL IS NULL` is not SQL) and add no node.
pub(super) fn nest(expression: String, wrappers: &[usize]) -> String {
    let nested = wrappers.iter().fold(expression, |inner, &w| {
        WRAPPERS[w].replace("{}", &format!("({inner})"))
    });
    format!("({nested})")
}

/// A statement with `expression` at a random depth and place.
pub(super) fn embed(expression: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (
        expression,
        prop::collection::vec(0..WRAPPERS.len(), 0..4),
        0..STATEMENTS.len(),
    )
        .prop_map(|(expression, wrappers, statement)| {
            STATEMENTS[statement].replace("{}", &nest(expression, &wrappers))
        })
}

/// As [`embed`], in statements that may be reads.
pub(super) fn read_embed(
    expression: impl Strategy<Value = String>,
) -> impl Strategy<Value = String> {
    let reads: Vec<&'static str> = STATEMENTS
        .iter()
        .copied()
        .filter(|s| {
            s.starts_with("SELECT")
                || s.starts_with("WITH")
                || s.starts_with("VALUES")
                || s.starts_with("EXPLAIN")
                || s.starts_with("(SELECT")
        })
        .collect();
    (
        expression,
        prop::collection::vec(0..WRAPPERS.len(), 0..4),
        prop::sample::select(reads),
    )
        .prop_map(|(expression, wrappers, statement)| {
            statement.replace("{}", &nest(expression, &wrappers))
        })
}

pub(super) fn hidden_never_call() -> impl Strategy<Value = Hidden> {
    (
        never_call(),
        prop::collection::vec(0..WRAPPERS.len(), 0..4),
        0..STATEMENTS.len(),
        0..FROM_STATEMENTS.len(),
        any::<bool>(),
    )
        .prop_map(
            |((call, function, from_ok), wrappers, statement, from_statement, in_from)| {
                let sql = if in_from && from_ok {
                    FROM_STATEMENTS[from_statement].replace("{}", &call)
                } else {
                    STATEMENTS[statement].replace("{}", &nest(call, &wrappers))
                };
                Hidden { sql, function }
            },
        )
}

/// Statements the policy may or may not admit as reads.
pub(super) fn read_candidates() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => embed(prop::sample::select(PAYLOADS).prop_map(str::to_owned)),
        3 => read_embed(prop::sample::select(PAYLOADS).prop_map(str::to_owned)),
        1 => read_embed(never_call().prop_map(|(call, _, _)| call)),
        1 => hidden_never_call().prop_map(|hidden| hidden.sql),
        2 => mutated(),
        1 => token_soup(),
    ]
}

/// A mutation of a corpus statement: (kind, position, operand).
pub(super) fn mutated() -> impl Strategy<Value = String> {
    (
        0..CORPUS.len(),
        prop::collection::vec((0..5u8, any::<usize>(), any::<usize>()), 1..5),
    )
        .prop_map(|(seed, mutations)| {
            let mut bytes = CORPUS[seed].as_bytes().to_vec();
            for (kind, position, operand) in mutations {
                let at = position % (bytes.len() + 1);
                match kind {
                    0 if !bytes.is_empty() => {
                        let at = at.min(bytes.len() - 1);
                        // Truncation, as u8, is the point: a random byte.
                        bytes[at] ^= (operand as u8) | 1;
                    }
                    1 => {
                        let insert = INSERTS[operand % INSERTS.len()].as_bytes();
                        bytes.splice(at..at, insert.iter().copied());
                    }
                    2 => bytes.truncate(at),
                    3 => {
                        let end = (at + operand % 16).min(bytes.len());
                        bytes.drain(at..end);
                    }
                    _ => {
                        let end = (at + operand % 32).min(bytes.len());
                        let copy = bytes[at..end].to_vec();
                        bytes.splice(at..at, copy);
                    }
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

/// Words, punctuation and literals in any order.
pub(super) fn token_soup() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "SELECT",
        "FROM",
        "WHERE",
        "WITH",
        "AS",
        "(",
        ")",
        ",",
        "t",
        "a",
        "1",
        "'x'",
        "NULL",
        "UNION",
        "ALL",
        "INSERT",
        "INTO",
        "VALUES",
        "UPDATE",
        "SET",
        "DELETE",
        "RETURNING",
        "*",
        "FOR",
        "UPDATE",
        "LATERAL",
        "JOIN",
        "ON",
        "true",
        "=",
        "+",
        "EXPLAIN",
        "CREATE",
        "TABLE",
        "DEFAULT",
        "set_config",
        "pg_read_file",
        "ts_stat",
        "lower",
        "count",
        ".",
        "pg_catalog",
        "::",
        "int",
        "text",
        "CASE",
        "WHEN",
        "THEN",
        "END",
        "ORDER",
        "BY",
        "$1",
        ";",
        "MERGE",
        "USING",
        "MATCHED",
        "DO",
        "NOTHING",
        "CALL",
        "VARIADIC",
        "ARRAY",
        "[",
        "]",
        "OVER",
    ];
    prop::collection::vec(prop::sample::select(TOKENS), 1..40).prop_map(|tokens| tokens.join(" "))
}

/// Deeply nested statements: (opening, closing) repeated.
pub(super) fn deep() -> impl Strategy<Value = String> {
    /// (head, opening, innermost, closing).
    const NESTS: &[(&str, &str, &str, &str)] = &[
        ("SELECT ", "(SELECT ", "1", ")"),
        ("SELECT ", "(", "1", ")"),
        ("SELECT ", "1 + ", "1", ""),
        ("SELECT ", "ARRAY[", "1", "]"),
        ("SELECT ", "CASE WHEN true THEN ", "1", " END"),
        ("SELECT ", "- ", "1", ""),
        ("SELECT ", "NOT ", "true", ""),
        ("SELECT ", "lower(", "'a'", ")"),
        ("SELECT ", "coalesce(", "1", ", 1)"),
        ("SELECT * FROM ", "(SELECT * FROM ", "(SELECT 1) s", ") s"),
        ("", "WITH c AS (", "SELECT 1", ") SELECT 1"),
        ("SELECT ", "ROW(", "1", ")"),
        ("SELECT ", "jsonb_build_object('a', ", "1", ")"),
        (
            "SELECT ",
            "(SELECT set_config('a', 'b', false) FROM (SELECT ",
            "1",
            ") s)",
        ),
    ];
    (0..NESTS.len(), 1..400usize).prop_map(|(nest, depth)| {
        let (head, open, inner, close) = NESTS[nest];
        let mut sql = String::from(head);
        sql.push_str(&open.repeat(depth));
        sql.push_str(inner);
        sql.push_str(&close.repeat(depth));
        sql
    })
}

pub(super) fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~\n\t]{0,160}",
        "(SELECT|WITH|EXPLAIN|CREATE TABLE|INSERT INTO|VALUES) [a-z_(),'$0-9 *=.:\\[\\]|]{0,100}",
        "\\PC{0,80}",
    ]
}

pub(super) fn default_allowed() -> AllowedFunctions {
    AllowedFunctions::default()
}

/// An operator's generous config: every user schema, and a built-in that
/// may be allowed. Never-allowed functions must stay refused under it.
pub(super) fn generous_allowed() -> AllowedFunctions {
    AllowedFunctions::parse(&[
        "public.*".into(),
        "ext.*".into(),
        "pg_catalog.gin_clean_pending_list".into(),
    ])
    .unwrap()
}
