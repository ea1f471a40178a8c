//! A slow database is isolated: while one module's statements sleep or
//! wait on a lock, its calls end with STATEMENT_TIMEOUT, POOL_EXHAUSTED
//! or MODULE_BUSY (its bulkhead is full), the host's blocking threads stay
//! bounded, and the other module's p99 stays within 2× of its unloaded
//! p99.

use std::time::{Duration, Instant};

use mcp_delegate_tests::bench::threads_of;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::load::{p99, summary, Call, Load, Outcome, Record};
use mcp_delegate_tests::pg::PgVersion;
use mcp_delegate_tests::pgfixture::TwoDatabases;
use serde_json::json;

fn reader_token(idp: &TestIdp) -> String {
    idp.mint(
        "reader",
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"]}),
    )
}

fn point_query(token: &str) -> Call {
    Call {
        tool: "sql2-delegate".into(),
        token: Some(token.to_owned()),
        arguments: json!({"action": "query",
            "sql": "SELECT id, body FROM notes WHERE id = $1", "params": [1]}),
    }
}

/// The healthy module's calls while `clients` of them run alone.
fn healthy_calls(url: &str, token: &str, clients: usize, run: Duration) -> Vec<Record> {
    let token = token.to_owned();
    let load = Load::start(url, clients, Duration::from_millis(2), move |_, _| {
        point_query(&token)
    });
    std::thread::sleep(run);
    load.finish()
}

#[test]
fn a_slow_database_stays_in_its_module() {
    let databases = TwoDatabases::start(
        PgVersion::V15,
        json!({
            "statementTimeoutMillis": 1500,
            "pool": {"max": 4, "min": 0, "connectionTimeoutMillis": 500},
            "queuedCalls": 4,
        }),
    );
    let (slow, idp, host) = (&databases.first, &databases.idp, &databases.host);
    let token = reader_token(idp);
    let url = host.mcp_url();

    // Unloaded: the healthy module alone (after a warm-up).
    healthy_calls(&url, &token, 2, Duration::from_millis(500));
    let unloaded = healthy_calls(&url, &token, 2, Duration::from_secs(3));
    let unloaded_p99 = p99(&unloaded.iter().collect::<Vec<_>>());
    let threads_before = threads_of(host.pid());

    // A lock held on the slow database's table, and 24 clients calling
    // it: half wait on the lock, half sleep past the statement timeout.
    let mut holder =
        postgres::Client::connect(&slow.admin_url("postgres"), postgres::NoTls).expect("connect");
    let mut lock = holder.transaction().expect("begin");
    lock.batch_execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let slow_token = token.clone();
    let slow_load = Load::start(&url, 24, Duration::from_millis(50), move |client, _| Call {
        tool: "sql1-delegate".into(),
        token: Some(slow_token.clone()),
        arguments: if client % 2 == 0 {
            json!({"action": "query", "sql": "SELECT count(*) FROM notes", "params": []})
        } else {
            json!({"action": "query", "sql": "SELECT pg_sleep(10)", "params": []})
        },
    });
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let sampler = {
        let pid = host.pid();
        std::thread::spawn(move || {
            let mut most = 0;
            while started.elapsed() < Duration::from_secs(4) {
                most = most.max(threads_of(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    let loaded = healthy_calls(&url, &token, 2, Duration::from_secs(4));
    let most_threads = sampler.join().expect("sampler");
    let slow_records = slow_load.finish();
    lock.rollback().expect("release the lock");

    let slow_calls: Vec<&Record> = slow_records.iter().collect();
    let loaded_p99 = p99(&loaded.iter().collect::<Vec<_>>());
    println!(
        "slow module: {:?}; healthy module: p99 {unloaded_p99:?} unloaded, {loaded_p99:?} \
         during ({} calls, {:?}); host threads {threads_before} before, at most {most_threads} during",
        summary(&slow_calls),
        loaded.len(),
        summary(&loaded.iter().collect::<Vec<_>>()),
    );
    for record in &slow_records {
        let code = record.outcome.code();
        assert!(
            matches!(
                code,
                Some("STATEMENT_TIMEOUT" | "POOL_EXHAUSTED" | "MODULE_BUSY")
            ),
            "the slow module answered {:?}",
            record.outcome
        );
        assert!(
            // At most one statement timeout waiting in the queue (the
            // running calls end within it), one running, and a margin.
            record.elapsed < Duration::from_millis(1500 + 1500 + 1000),
            "a slow-module call took {:?}",
            record.elapsed
        );
    }
    let busy = slow_records
        .iter()
        .filter(|record| record.outcome.code() == Some("MODULE_BUSY"))
        .count();
    assert!(busy > 0, "24 clients never filled the bulkhead of 4 + 4");
    for record in &loaded {
        assert!(
            matches!(record.outcome, Outcome::Ok(_)),
            "the healthy module failed: {:?}",
            record.outcome
        );
    }
    // The bulkhead runs 4 slow calls at once (4 blocking threads; the 4
    // queued ones wait without a thread): 8 at most is a loose bound
    // (plus the healthy module's and a few of tokio's).
    assert!(
        most_threads <= threads_before + 8 + 4,
        "the host grew from {threads_before} to {most_threads} threads"
    );
    // 2× the unloaded p99, with a floor of 5 ms for a sub-millisecond base
    // on a shared two-core machine.
    let bound = (unloaded_p99 * 2).max(unloaded_p99 + Duration::from_millis(5));
    assert!(
        loaded_p99 <= bound,
        "the healthy module's p99 went from {unloaded_p99:?} to {loaded_p99:?}"
    );
}
