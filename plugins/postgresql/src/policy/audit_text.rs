//! What the audit log may show of a statement: pg_query's fingerprint and
//! a normalized text that never holds a literal. Computed once per
//! statement text, with its verdict (or refusal), under the policy's size
//! bound and parse permits.

/// What the audit log may show of a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditText {
    pub fingerprint: Option<Box<str>>,
    pub normalized: Option<Box<str>>,
}

impl AuditText {
    /// Of `sql` (parses it again: call only where parsing is bounded).
    pub fn of(sql: &str) -> Self {
        Self {
            fingerprint: fingerprint(sql).map(Into::into),
            normalized: normalized(sql).map(Into::into),
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.fingerprint.as_ref().map_or(0, |s| s.len())
            + self.normalized.as_ref().map_or(0, |s| s.len())
    }
}

/// pg_query's fingerprint of `sql` (hex), if it parses.
fn fingerprint(sql: &str) -> Option<String> {
    pg_query::fingerprint(
        sql,
        pg_query::ParserOptions::DEFAULT,
        pg_query::FingerprintOptions::FULL_RELNAME,
    )
    .ok()
    .map(|fingerprint| fingerprint.hex)
}

/// The longest normalized text kept (a statement's first 8 KiB).
const MAX_NORMALIZED_BYTES: usize = 8 * 1024;

/// `sql` with its constants replaced by placeholders, if it parses: its
/// tokens joined by single spaces, so no comment survives; a constant that
/// pg_query leaves (ordinals in `ORDER BY 1`, type modifiers, some utility
/// statements) becomes `?`: what the audit log shows must never hold a
/// literal. At most [`MAX_NORMALIZED_BYTES`] (the statement's beginning).
fn normalized(sql: &str) -> Option<String> {
    use pg_query::protobuf::Token;
    let text = pg_query::normalize(sql).ok()?;
    let tokens = pg_query::scan(&text).ok()?.tokens;
    let mut out = String::with_capacity(text.len().min(MAX_NORMALIZED_BYTES + 4));
    for token in &tokens {
        let kind = Token::try_from(token.token);
        if matches!(kind, Ok(Token::SqlComment | Token::CComment)) {
            continue;
        }
        let start = usize::try_from(token.start).ok()?;
        let end = usize::try_from(token.end).ok()?;
        let piece = if matches!(
            kind,
            Ok(Token::Fconst
                | Token::Sconst
                | Token::Usconst
                | Token::Bconst
                | Token::Xconst
                | Token::Iconst)
        ) {
            "?"
        } else {
            text.get(start..end)?
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
        if out.len() > MAX_NORMALIZED_BYTES {
            // The audit log keeps the statement's beginning.
            let mut cut = MAX_NORMALIZED_BYTES;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str(" …");
            break;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn normalized_text_never_holds_a_literal_or_a_comment() {
        assert_eq!(
            normalized("SELECT * FROM notes WHERE body = 'secret' AND id > 42").as_deref(),
            Some("SELECT * FROM notes WHERE body = $1 AND id > $2")
        );
        assert_eq!(
            normalized("SELECT 1 /* the password is hunter2 */ -- and more\n").as_deref(),
            Some("SELECT $1")
        );
        let dollar = normalized("SELECT $q$secret$q$, E'x', B'101', X'ff', 1.5e3").unwrap();
        for literal in ["secret", "x'", "101", "ff", "1.5"] {
            assert!(!dollar.contains(literal), "{dollar}");
        }
        assert_eq!(normalized("SELECT 'unterminated"), None);
        // What pg_query leaves in place becomes `?`.
        assert_eq!(
            normalized("SELECT body::varchar(5) FROM notes ORDER BY 1").as_deref(),
            Some("SELECT body :: varchar ( ? ) FROM notes ORDER BY ?")
        );
        let long = format!("SELECT \"{}\"", "x".repeat(100_000));
        assert!(normalized(&long).unwrap().len() < 8 * 1024 + 8);
    }
}
