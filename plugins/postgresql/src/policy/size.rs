//! A statement's size in tokens, counted without parsing it: what the
//! policy's memory grows with (a literal, however long, is one token).

/// Counts the tokens of `sql`, stopping once past `limit`: words and
/// numbers, quoted strings and identifiers, dollar-quoted strings, `$n`
/// parameters and each punctuation character (an upper bound for
/// operators). Comments count nothing.
pub fn token_count(sql: &str, limit: usize) -> usize {
    let bytes = sql.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() && count <= limit {
        let byte = bytes[i];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = find(bytes, i, b"\n").map_or(bytes.len(), |end| end + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_comment(bytes, i);
                continue;
            }
            b'\'' => i = skip_quoted(bytes, i, b'\'', escapes_backslash(bytes, i)),
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'$' => i = skip_dollar(bytes, i),
            _ if is_word(byte) => {
                while i < bytes.len() && is_word(bytes[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        count += 1;
    }
    count
}

fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

/// `E'…'` (the quote right after an E) reads backslash escapes.
fn escapes_backslash(bytes: &[u8], quote: usize) -> bool {
    quote > 0
        && matches!(bytes[quote - 1], b'e' | b'E')
        && (quote < 2 || !is_word(bytes[quote - 2]))
}

/// Past a `'…'` or `"…"` (doubled quotes inside), or to the end.
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash => i += 2,
            b if b == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Past a nested `/* … */` comment, or to the end.
fn skip_comment(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Past `$tag$…$tag$` or `$1`; a lone `$` is one character.
fn skip_dollar(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    if bytes.get(i).is_some_and(u8::is_ascii_digit) {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        return i;
    }
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
    {
        i += 1;
    }
    if bytes.get(i) != Some(&b'$') {
        return start + 1;
    }
    let tag = &bytes[start..=i];
    find(bytes, i + 1, tag).map_or(bytes.len(), |end| end + tag.len())
}

#[cfg(test)]
mod tests {
    use super::token_count;

    #[test]
    fn counts_tokens_not_bytes() {
        assert_eq!(token_count("SELECT 1", 100), 2);
        assert_eq!(token_count("SELECT a, b FROM t WHERE x = $1", 100), 10);
        assert_eq!(token_count("SELECT 'it''s', \"a\"\"b\", E'\\'x'", 100), 7);
        assert_eq!(token_count("SELECT $$ a ' b $$, $t$ $$ $t$", 100), 4);
        assert_eq!(
            token_count("SELECT /* a /* b */ c */ 1 -- x y z\n, 2", 100),
            4
        );
        assert_eq!(
            token_count(&format!("SELECT '{}'", "x ".repeat(10_000)), 100),
            2
        );
        assert_eq!(
            token_count(&"1,".repeat(1000), 50),
            51,
            "stops past the limit"
        );
        assert_eq!(token_count("SELECT 'unterminated", 100), 2);
    }
}
