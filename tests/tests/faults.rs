//! A database that restarts, crashes or loses its backends while clients
//! keep calling: that module's calls fail fast with DATABASE_UNAVAILABLE,
//! the other module sees no error, the module heals within 5 s of the
//! database returning, no write is applied twice, and no call returns
//! another role's rows.

use std::time::{Duration, Instant};

use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::load::{p99, summary, Call, Load, Outcome, Record};
use mcp_delegate_tests::pg::PgVersion;
use mcp_delegate_tests::pgfixture::TwoDatabases;
use serde_json::{json, Value};

/// The fixture's `pool.connectionTimeoutMillis`.
const CONNECTION_TIMEOUT: Duration = Duration::from_millis(3000);
/// What the heal may take once the database accepts connections again.
const HEAL_WITHIN: Duration = Duration::from_secs(5);

fn token(idp: &TestIdp, identity: &str, roles: &[&str]) -> String {
    let mut all = vec!["user"];
    all.extend_from_slice(roles);
    idp.mint(
        identity,
        "mcp-oauth",
        json!({"legacy_name": identity, "roles": all}),
    )
}

/// Client 0 writes a note with a unique body; the others read their
/// own notes. Clients `0..per_module` use module 1, the rest module 2.
fn load_call(reader: &str, writer: &str, per_module: usize, client: usize, n: u64) -> Call {
    let tool = if client < per_module {
        "sql1-delegate"
    } else {
        "sql2-delegate"
    };
    if client == 0 {
        Call {
            tool: tool.to_owned(),
            token: Some(writer.to_owned()),
            arguments: json!({"action": "query",
                "sql": "INSERT INTO notes (body) VALUES ($1) RETURNING id, owner",
                "params": [format!("w-{n}")]}),
        }
    } else {
        Call {
            tool: tool.to_owned(),
            token: Some(reader.to_owned()),
            arguments: json!({"action": "query",
                "sql": "SELECT id, owner, body FROM notes ORDER BY id", "params": []}),
        }
    }
}

/// One fault and when the database took connections again.
struct Fault {
    name: &'static str,
    began: Instant,
    back: Instant,
}

fn first_success_after(records: &[Record], tool: &str, at: Instant) -> Option<Instant> {
    records
        .iter()
        .filter(|record| record.call.tool == tool && record.start >= at)
        .find(|record| matches!(record.outcome, Outcome::Ok(_)))
        .map(Record::end)
}

fn faults_under_load(version: PgVersion) {
    let databases = TwoDatabases::start(version, json!({}));
    let (first, idp, host) = (&databases.first, &databases.idp, &databases.host);
    let (reader, writer) = (
        token(idp, "reader", &["sql-read"]),
        token(idp, "writer", &["sql-read", "sql-write"]),
    );
    let per_module = 3;
    let load = Load::start(
        &host.mcp_url(),
        2 * per_module,
        Duration::from_millis(5),
        move |client, n| load_call(&reader, &writer, per_module, client, n),
    );
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let mut faults = Vec::new();
    for mode in ["fast", "immediate"] {
        let began = Instant::now();
        first.stop_mode(mode);
        // Longer than the pool's wait: calls must fail, not hang.
        std::thread::sleep(CONNECTION_TIMEOUT + Duration::from_secs(1));
        first.restart();
        let back = Instant::now();
        faults.push(Fault {
            name: if mode == "fast" {
                "restart (fast shutdown)"
            } else {
                "crash (immediate shutdown)"
            },
            began,
            back,
        });
        std::thread::sleep(HEAL_WITHIN + Duration::from_secs(1));
    }
    // Our backends killed under the running calls, five times.
    let began = Instant::now();
    for _ in 0..5 {
        first.exec(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name LIKE 'mcp-delegate/%'",
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    faults.push(Fault {
        name: "pg_terminate_backend ×5",
        began,
        back: Instant::now(),
    });
    std::thread::sleep(HEAL_WITHIN + Duration::from_secs(1));
    let records = load.finish();

    let module = |tool: &str| -> Vec<&Record> {
        records
            .iter()
            .filter(|record| record.call.tool == tool)
            .collect()
    };
    let (first_calls, second_calls) = (module("sql1-delegate"), module("sql2-delegate"));
    let before_faults: Vec<&Record> = second_calls
        .iter()
        .copied()
        .filter(|record| record.start > started + Duration::from_millis(500))
        .filter(|record| record.end() < faults[0].began)
        .collect();
    println!(
        "PostgreSQL {}: module 1 {:?}, module 2 {:?}, module 2 p99 {:?} before the faults, {:?} \
         throughout",
        version.major(),
        summary(&first_calls),
        summary(&second_calls),
        p99(&before_faults),
        p99(&second_calls)
    );
    // The other module never noticed.
    for record in &second_calls {
        assert!(
            matches!(record.outcome, Outcome::Ok(_)),
            "the healthy module failed a call: {:?}",
            record.outcome
        );
    }
    // Failures are the one clear code, and fast.
    for record in &first_calls {
        if let Some(code) = record.outcome.code() {
            assert_eq!(
                code, "DATABASE_UNAVAILABLE",
                "unexpected failure: {:?}",
                record.outcome
            );
        }
        assert!(
            record.elapsed <= CONNECTION_TIMEOUT + Duration::from_millis(250),
            "a call waited {:?}, longer than pool.connectionTimeoutMillis",
            record.elapsed
        );
    }
    let slowest_failure = first_calls
        .iter()
        .filter(|record| record.outcome.code().is_some())
        .map(|record| record.elapsed)
        .max()
        .unwrap_or_default();
    let slowest = first_calls
        .iter()
        .map(|record| record.elapsed)
        .max()
        .unwrap_or_default();
    println!("  slowest failed call: {slowest_failure:?}, slowest call: {slowest:?}");
    // Once the module knows the database is down, calls fail fast: only
    // the calls that find out wait the whole connection timeout, so each
    // client fails many calls during a 4-second outage, not one or two.
    for fault in faults.iter().take(2) {
        let during = first_calls
            .iter()
            .filter(|record| {
                record.start >= fault.began
                    && record.start < fault.back
                    && record.outcome.code().is_some()
            })
            .count();
        assert!(
            during >= 4 * per_module,
            "{}: only {during} calls failed while the database was down: calls do not fail fast",
            fault.name
        );
    }
    // Each fault healed, and every call that started HEAL_WITHIN after
    // the database came back succeeded.
    let ends: Vec<Instant> = faults
        .iter()
        .skip(1)
        .map(|fault| fault.began)
        .chain(records.last().map(Record::end))
        .collect();
    for (fault, next_began) in faults.iter().zip(ends) {
        let healed = first_success_after(&records, "sql1-delegate", fault.back)
            .unwrap_or_else(|| panic!("{}: module 1 never healed", fault.name));
        let failures: Vec<&&Record> = first_calls
            .iter()
            .filter(|record| {
                record.start >= fault.began
                    && record.start < fault.back + HEAL_WITHIN
                    && record.outcome.code().is_some()
            })
            .collect();
        println!(
            "  {}: {} failed calls, first success {:?} after the database was back",
            fault.name,
            failures.len(),
            healed.saturating_duration_since(fault.back)
        );
        assert!(
            healed.saturating_duration_since(fault.back) <= HEAL_WITHIN,
            "{}: healed only after {:?}",
            fault.name,
            healed.saturating_duration_since(fault.back)
        );
        let mut checked = 0;
        for record in &first_calls {
            if record.start >= fault.back + HEAL_WITHIN && record.end() < next_began {
                checked += 1;
                assert!(
                    matches!(record.outcome, Outcome::Ok(_)),
                    "{}: a call {:?} after the database was back failed: {:?}",
                    fault.name,
                    record.start - fault.back,
                    record.outcome
                );
            }
        }
        assert!(
            checked > 0,
            "{}: no call ran after the heal window",
            fault.name
        );
    }
    assert!(
        faults.iter().all(
            |fault| first_calls.iter().any(|record| record.start >= fault.began
                && record.start < fault.back
                && record.outcome.code().is_some())
        ),
        "some fault caused no failed call: the test did not exercise it"
    );
    // Readers only ever saw their own rows.
    for record in &records {
        if let (Outcome::Ok(content), Some(rows)) = (
            &record.outcome,
            record.outcome_rows().filter(|_| record.client != 0),
        ) {
            for row in rows {
                assert_eq!(row["owner"], "reader", "{content}");
            }
        }
    }
    // No write applied twice; every acknowledged write is there once.
    let applied = first.query_texts(
        "postgres",
        "SELECT body || ':' || count(*) FROM notes WHERE body LIKE 'w-%' GROUP BY body",
    );
    let mut counts = std::collections::HashMap::new();
    for line in &applied {
        let (body, count) = line.rsplit_once(':').expect("body:count");
        assert_eq!(count, "1", "write {body} was applied {count} times");
        counts.insert(body.to_owned(), ());
    }
    let writes: Vec<&Record> = records.iter().filter(|record| record.client == 0).collect();
    for write in &writes {
        let body = write.call.arguments["params"][0]
            .as_str()
            .unwrap_or_default();
        if let Outcome::Ok(content) = &write.outcome {
            assert!(
                counts.contains_key(body),
                "acknowledged write {body} is missing"
            );
            assert_eq!(content["rows"][0]["owner"], "writer", "{content}");
        }
    }
    println!(
        "  writes: {} sent, {} acknowledged, {} applied",
        writes.len(),
        writes
            .iter()
            .filter(|write| matches!(write.outcome, Outcome::Ok(_)))
            .count(),
        applied.len()
    );
}

trait Rows {
    fn outcome_rows(&self) -> Option<&Vec<Value>>;
}

impl Rows for Record {
    fn outcome_rows(&self) -> Option<&Vec<Value>> {
        match &self.outcome {
            Outcome::Ok(content) => content["rows"].as_array(),
            _ => None,
        }
    }
}

#[test]
fn a_database_restart_crash_and_killed_backends_under_load_pg15() {
    faults_under_load(PgVersion::V15);
}

#[test]
fn a_database_restart_crash_and_killed_backends_under_load_pg18() {
    faults_under_load(PgVersion::V18);
}
