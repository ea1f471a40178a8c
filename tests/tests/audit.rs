//! The audit log answers "who read table X between T1 and T2, through
//! which client, as which role, and what did they run"; it fails closed
//! when asked to; it follows log rotation.

use std::time::Duration;

use mcp_delegate_tests::generation::{loaded_at, ready};
use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::pg::PgVersion;
use mcp_delegate_tests::pgfixture::Delegated;
use serde_json::{json, Value};

/// The delegation fixture with `audit` as its audit section.
fn start(audit: Value, extra_args: &[&str]) -> Delegated {
    Delegated::start_full(
        PgVersion::V15,
        json!({}),
        json!({"audit": audit}),
        extra_args,
    )
}

fn token(idp: &TestIdp, sub: &str, role: &str, client: &str, roles: &[&str]) -> String {
    let mut all = vec!["user"];
    all.extend_from_slice(roles);
    idp.mint(
        sub,
        "mcp-oauth",
        json!({"legacy_name": role, "roles": all, "azp": client,
               "preferred_username": format!("{sub}@example.com")}),
    )
}

/// Bob, who may write, as the `writer` role through `agent-b`.
fn writer_token(idp: &TestIdp) -> String {
    token(idp, "bob", "writer", "agent-b", &["sql-read", "sql-write"])
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("an audit line is JSON"))
        .collect()
}

fn query(host: &mut Host, token: &str, sql: &str) -> Value {
    host.bearer = Some(token.to_owned());
    host.call_tool("sql1-delegate", json!({"action": "query", "sql": sql}))
}

#[test]
fn the_audit_file_says_who_read_a_table_when_through_which_client_as_which_role() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut db = start(json!({"sink": file}), &[]);
    let alice = token(&db.idp, "alice", "reader", "agent-a", &["sql-read"]);
    let bob = writer_token(&db.idp);

    let t1 = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    query(
        &mut db.host,
        &alice,
        "SELECT id, body FROM notes WHERE body <> 'x'",
    );
    query(
        &mut db.host,
        &bob,
        "INSERT INTO notes (body) VALUES ('bob wrote this')",
    );
    let refused = query(
        &mut db.host,
        &alice,
        "SELECT query_to_xml('SELECT * FROM notes', true, true, '')",
    );
    assert_eq!(refused["isError"], true);
    // A traced request: the trace id reaches the audit line.
    let traced = db
        .host
        .http()
        .post(db.host.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", format!("Bearer {alice}"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
                "name": "sql1-delegate", "arguments": {"action": "query", "sql": "SELECT count(*) FROM notes"}}})
            .to_string(),
        )
        .send()
        .unwrap();
    assert_eq!(traced.status().as_u16(), 200);
    // Refused at the door: no valid token.
    let (status, _, _) = db.host.post_with_token(
        Some("not-a-token"),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
    );
    assert_eq!(status, 401);
    let t2 = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();

    let audit = lines(&file);
    // Who read `notes` between t1 and t2: from the file alone.
    let readers: Vec<&Value> = audit
        .iter()
        .filter(|line| {
            line["event"] == "tool-call"
                && line["outcome"] == "ok"
                && line["statementClass"] == "read"
                && line["normalized"]
                    .as_str()
                    .is_some_and(|sql| sql.contains("FROM notes"))
                && line["time"]
                    .as_str()
                    .is_some_and(|time| time >= t1.as_str() && time <= t2.as_str())
        })
        .collect();
    assert_eq!(readers.len(), 2, "{audit:#?}");
    let first = readers[0];
    assert_eq!(first["subject"], "alice");
    assert_eq!(first["username"], "alice@example.com");
    assert_eq!(first["client"], "agent-a");
    assert_eq!(first["idp"], "requestor-jwt");
    assert_eq!(first["serverRole"], "user");
    assert_eq!(first["databaseRole"], "reader");
    assert_eq!(first["module"], "postgresql1");
    assert_eq!(first["tool"], "sql1-delegate");
    assert_eq!(first["statementKind"], "SELECT");
    assert_eq!(
        first["normalized"],
        "SELECT id , body FROM notes WHERE body <> $1"
    );
    assert_eq!(first["fingerprint"].as_str().map(str::len), Some(16));
    assert_eq!(first["rows"], 2);
    assert_eq!(first["truncated"], false);
    assert!(first["durationMs"].as_f64().is_some());
    assert!(first["requestId"].as_str().unwrap().starts_with("req-"));
    assert_eq!(readers[1]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let write = audit
        .iter()
        .find(|line| line["statementClass"] == "write")
        .expect("the insert's line");
    assert_eq!(write["subject"], "bob");
    assert_eq!(write["databaseRole"], "writer");
    assert_eq!(write["rows"], 1);
    assert_eq!(
        write["normalized"],
        "INSERT INTO notes ( body ) VALUES ( $1 )"
    );

    let refusal = audit
        .iter()
        .find(|line| line["outcome"] == "error")
        .expect("the refused statement's line");
    assert_eq!(refusal["errorCode"], "SQL_FORBIDDEN_FUNCTION");
    assert_eq!(refusal["refusalReason"], "query-text");
    assert_eq!(refusal["subject"], "alice");

    let door = audit
        .iter()
        .find(|line| line["event"] == "request-refused")
        .expect("the refused request's line");
    assert_eq!(door["httpStatus"], 401);
    assert_eq!(door["reason"], "invalid_token");
    assert!(door.get("subject").is_none());

    let text = std::fs::read_to_string(&file).unwrap();
    for secret in [
        alice.as_str(),
        bob.as_str(),
        "bob wrote this",
        "service-pass",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
}

/// `failMode: closed` with a sink that cannot be written (`/dev/full`):
/// the call is refused and nothing runs. `open`: the call runs.
#[test]
fn a_failing_sink_refuses_calls_when_closed_and_not_when_open() {
    let mut db = start(json!({"sink": "/dev/full", "failMode": "closed"}), &[]);
    let bob = writer_token(&db.idp);
    let insert = "INSERT INTO notes (body) VALUES ('must not land')";
    let result = query(&mut db.host, &bob, insert);
    assert_eq!(Host::tool_error(&result)["error"], "AUDIT_UNAVAILABLE");
    let landed = db.cluster.query_texts(
        "postgres",
        "SELECT count(*)::text FROM notes WHERE body = 'must not land'",
    );
    assert_eq!(landed, ["0"]);

    let mut open = start(json!({"sink": "/dev/full"}), &[]);
    let bob = writer_token(&open.idp);
    let result = query(&mut open.host, &bob, insert);
    assert_eq!(result["isError"], false, "{result}");
    assert!(open
        .host
        .wait_for_log("audit line not written", Duration::from_secs(5)));
}

/// Log rotation: the file is moved away, `SIGHUP` reopens the configured
/// path, and the next line lands in the new file.
#[test]
fn sighup_reopens_the_audit_file_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut db = start(json!({"sink": file}), &["--no-watch"]);
    let alice = token(&db.idp, "alice", "reader", "agent-a", &["sql-read"]);
    query(&mut db.host, &alice, "SELECT 1");
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&file, &rotated).unwrap();
    let loaded = |host: &Host| loaded_at(&ready(host));
    let before = loaded(&db.host);
    db.host.hang_up();
    // The reload is done when the new generation serves (the file is
    // created while it is built, a moment before the swap).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while loaded(&db.host) == before {
        assert!(std::time::Instant::now() < deadline, "no reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(file.exists(), "not reopened");
    query(&mut db.host, &alice, "SELECT 2");
    assert_eq!(lines(&rotated).len(), 1);
    assert_eq!(lines(&file).len(), 1);
    assert_eq!(lines(&file)[0]["normalized"], "SELECT $1");
}

/// A client that sends a write and hangs up at once: the call still runs
/// to its end, and its audit line is written (the call is a task of its
/// own, not part of the request the disconnect drops).
#[test]
fn a_client_that_hangs_up_mid_call_still_gets_its_call_audited() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let db = start(json!({"sink": file}), &[]);
    let bob = writer_token(&db.idp);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "sql1-delegate",
        "arguments": {"action": "query",
                      "sql": "INSERT INTO notes (body) SELECT 'hung up' FROM pg_sleep(1)"}}})
    .to_string();
    let address = db.host.base_url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "POST /mcp HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n\
         Authorization: Bearer {bob}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Long enough for the server to have read the request, well before
    // the statement ends.
    std::thread::sleep(Duration::from_millis(300));
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = lines(&file)
            .into_iter()
            .find(|line| line["statementClass"] == "write")
        {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit line for the call of a client that hung up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(line["subject"], "bob");
    assert_eq!(line["outcome"], "ok");
    let landed = db.cluster.query_texts(
        "postgres",
        "SELECT count(*)::text FROM notes WHERE body = 'hung up'",
    );
    assert_eq!(landed, ["1"]);
}
