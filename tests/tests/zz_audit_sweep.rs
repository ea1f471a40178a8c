//! The audit log never holds a token, a password, a literal, a parameter
//! value or a row. Runs last (test binaries run in name order): with
//! `MCPD_TEST_AUDIT_DIR` set, as the README's test command sets it, it
//! sweeps the audit files of every host the whole suite started, against
//! every token the suite signed and every literal and parameter value it
//! sent. It first runs a workload of its own, so it proves something when
//! run alone too.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use mcp_delegate_tests::audit_sweep::{self, string_literals};
use mcp_delegate_tests::host::{Host, CANARY};
use mcp_delegate_tests::idp::{unsigned_token, TestIdp, CLIENT_SECRET};
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use mcp_delegate_tests::pg::Cluster;
use mcp_delegate_tests::pgfixture::{auth_section, module_entry, FIXTURE_SQL};
use serde_json::{json, Value};

/// Every password the suite's fixtures use (and the IdP client secret).
const PASSWORDS: &[&str] = &[
    "service-pass",
    "superuser-pass",
    "ServicePass123!",
    "AnalyticsPass123!",
    CLIENT_SECRET,
];

/// Fields that name who and where: they may equal a literal someone sent
/// (`'reader'`) without leaking it.
const WHO_FIELDS: &[&str] = &[
    "time",
    "requestId",
    "traceId",
    "subject",
    "username",
    "idp",
    "client",
    "serverRole",
    "module",
    "tool",
    "databaseRole",
];

/// Fields from fixed vocabularies (codes, kinds, categories).
const VOCABULARY_FIELDS: &[&str] = &[
    "event",
    "outcome",
    "statementClass",
    "statementKind",
    "errorCode",
    "sqlstate",
    "refusalReason",
    "reason",
];

/// First words of literals that are query text.
const SQL_STARTS: &[&str] = &[
    "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "VALUES", "TABLE", "CREATE", "DROP", "ALTER",
    "SET", "SHOW", "EXPLAIN", "COPY", "GRANT", "REVOKE", "DO", "CALL", "BEGIN",
];

/// Numbers and flags.
const NUMBER_FIELDS: &[&str] = &["rows", "truncated", "durationMs", "httpStatus"];

/// Statements whose literals and parameters must not reach the audit log.
const WORKLOAD: &[(&str, &[&str])] = &[
    ("SELECT id FROM notes WHERE body = 'reader note 1'", &[]),
    ("SELECT id FROM notes WHERE body = $1", &["reader note 2"]),
    ("SELECT 'sweep-literal-one' AS a, 314159 AS b", &[]),
    (
        "SELECT $$sweep-dollar-quoted$$ AS c /* sweep-comment-text */",
        &[],
    ),
    (
        "SELECT query_to_xml('SELECT secret FROM vault_data', true, true, '')",
        &[],
    ),
    ("SELECT pg_read_file('sweep-read-file-path')", &[]),
    ("SELECT * FROM notes WHERE body = E'sweep-escaped\\n'", &[]),
    // A value written as an identifier: an unknown column to the database.
    (
        "SELECT id FROM notes WHERE body = \"sweep ident secret\"",
        &[],
    ),
    ("SELECT body FROM notes ORDER BY 1 LIMIT 1", &[]),
];

#[test]
fn no_audit_line_holds_a_token_a_password_a_literal_or_a_row() {
    let own = run_own_workload();
    let mut files = vec![own.file.clone()];
    let mut tokens: HashSet<String> = own.tokens.into_iter().collect();
    let mut literals: BTreeSet<String> = own.literals.into_iter().collect();
    if let Some(dir) = audit_sweep::dir() {
        let suite_files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| {
                        path.file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| name.starts_with("audit-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            suite_files.len() >= 20,
            "the suite's hosts wrote only {} audit files into {}",
            suite_files.len(),
            dir.display()
        );
        files.extend(suite_files);
        let read_list = |name: &str| -> Vec<String> {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        };
        tokens.extend(read_list("tokens.txt"));
        literals.extend(read_list("literals.txt"));
    }
    let literals: Vec<String> = literals.into_iter().collect();

    let mut lines = 0usize;
    let mut normalized_texts: BTreeSet<String> = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            assert!(!line.contains(CANARY), "a row in the audit log: {line}");
            for password in PASSWORDS {
                assert!(!line.contains(password), "a password in: {line}");
            }
            // A JWT is three base64url parts: look at every such word.
            for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c))) {
                assert!(
                    !tokens.contains(word),
                    "a token in {}: {line}",
                    file.display()
                );
                assert!(
                    !looks_like_jwt(word),
                    "something like a JWT in {}: {line}",
                    file.display()
                );
            }
            let record: Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            let Value::Object(fields) = record else {
                panic!("not an object: {line}");
            };
            for (key, value) in &fields {
                let key = key.as_str();
                if WHO_FIELDS.contains(&key) || NUMBER_FIELDS.contains(&key) {
                    continue;
                }
                let text = value.as_str().unwrap_or_default();
                if VOCABULARY_FIELDS.contains(&key) {
                    assert!(
                        !text.is_empty()
                            && text.len() <= 40
                            && text
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b" -_".contains(&b)),
                        "{key} is not a code: {line}"
                    );
                } else if key == "fingerprint" {
                    assert!(
                        text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{line}"
                    );
                } else if key == "normalized" {
                    assert!(
                        constants_in(text).is_empty(),
                        "a constant in the normalized text {:?} of {}",
                        constants_in(text),
                        file.display()
                    );
                    normalized_texts.insert(text.to_owned());
                } else {
                    panic!("an audit field the sweep does not know, {key}: {line}");
                }
            }
        }
    }
    // The normalized texts hold no constant (above); on top, no literal of
    // several words may be in one. Literals that are themselves query text
    // (for query_to_xml, dblink: they start with a keyword) are left out:
    // the same statement sent directly is rightly in the log.
    let sentences = literals.iter().filter(|literal| {
        let first = literal.split_whitespace().next().unwrap_or_default();
        literal.split_whitespace().count() > 1
            && !SQL_STARTS.contains(&first.to_ascii_uppercase().as_str())
    });
    let sentences: Vec<&String> = sentences.collect();
    for text in &normalized_texts {
        for literal in &sentences {
            assert!(
                !text.contains(literal.as_str()),
                "the literal {literal:?} in the normalized text {text}"
            );
        }
    }
    assert!(lines >= WORKLOAD.len(), "only {lines} audit lines");
    assert!(
        normalized_texts.len() >= 4,
        "too few normalized texts to prove anything: {normalized_texts:?}"
    );
    eprintln!(
        "audit sweep: {lines} lines in {} files; {} tokens, {} literals and parameter values, {} passwords looked for",
        files.len(),
        tokens.len(),
        literals.len(),
        PASSWORDS.len()
    );
}

fn looks_like_jwt(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3 && parts[0].starts_with("eyJ") && parts[1].len() >= 10
}

/// String or numeric constants left in a normalized statement: quotes, or
/// a number not part of a name or a `$n` placeholder.
fn constants_in(normalized: &str) -> Vec<String> {
    let mut found = Vec::new();
    if normalized.contains('\'') {
        found.push("a quoted string".to_owned());
    }
    let bytes = normalized.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            let before = start
                .checked_sub(1)
                .map(|at| bytes[at])
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b == b'"');
            if before.is_none() {
                found.push(normalized[start..i].to_owned());
            }
        } else {
            i += 1;
        }
    }
    found
}

struct OwnWorkload {
    file: PathBuf,
    tokens: Vec<String>,
    literals: Vec<String>,
}

/// One host with an audit file of its own: reads with literals and
/// parameters, refusals, a bad token, an unknown tool.
fn run_own_workload() -> OwnWorkload {
    let cluster = Cluster::start();
    cluster.exec("postgres", FIXTURE_SQL);
    let idp = TestIdp::start();
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let audit_dir = tempfile::tempdir().unwrap();
    let file = audit_dir.path().join("own.jsonl");
    let config = json!({
        "auth": auth_section(&idp),
        "audit": {"sink": file},
        "delegation": {"modules": {"postgresql1": module_entry(&cluster, json!({}))}}
    });
    let mut host = Host::start(&config, plugins.path());
    let token = idp.mint(
        "sweeper",
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"], "azp": "sweep-agent"}),
    );
    let forged = unsigned_token(&json!({"sub": "sweeper", "aud": "mcp-oauth"}));
    let mut literals = Vec::new();
    host.bearer = Some(token.clone());
    for (sql, params) in WORKLOAD {
        literals.extend(string_literals(sql));
        literals.extend(params.iter().map(|p| (*p).to_owned()));
        literals.extend(
            [
                "sweep-dollar-quoted",
                "sweep-comment-text",
                "314159",
                "sweep ident secret",
            ]
            .map(str::to_owned),
        );
        host.call_tool(
            "sql1-delegate",
            json!({"action": "query", "sql": sql, "params": params}),
        );
    }
    host.rpc(
        "tools/call",
        json!({"name": "no-such-tool", "arguments": {}}),
    );
    let (status, _, _) = host.post_with_token(
        Some(&forged),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "sql1-delegate", "arguments": {"action": "query", "sql": "SELECT 1"}}})
        .to_string(),
    );
    assert_eq!(status, 401);
    drop(host);
    let kept = audit_dir.keep();
    OwnWorkload {
        file: kept.join("own.jsonl"),
        tokens: vec![token, forged],
        literals,
    }
}
