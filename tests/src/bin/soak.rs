//! The soak: mixed load at about half of the measured peak for a long
//! time (30 minutes by default), to find leaks and slow drifts. Not part
//! of the test suite; run it with `scripts/soak.sh`.
//!
//! The mix, per client, every ten calls: five point queries by primary
//! key, a 100-row query, the schema tool, table details, a hostile
//! statement the policy refuses, and a statement the database fails.
//! Every twentieth call comes from a new user (a freshly minted token
//! with a new subject), so the verified-token cache keeps filling and
//! evicting. Audit goes to a file and metrics are on, as in production.
//!
//! Every minute it writes the host's RSS, calls/s, p99 and unexpected
//! outcomes to `soak.csv`; at the end it draws `soak.svg` and checks the
//! RSS slope after warm-up (< 1 MB per 10 minutes) and that nothing
//! unexpected happened. Exit status 1 when either fails.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_delegate_tests::bench::http1::{split_url, Http1Client};
use mcp_delegate_tests::bench::{memory_mib, threads_of};
use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::TestIdp;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library};
use mcp_delegate_tests::pg::{free_port, Cluster};
use mcp_delegate_tests::pgfixture::{auth_section, module_entry, FIXTURE_SQL};
use serde_json::{json, Value};

const CLIENTS: usize = 8;
const TOKEN_POOL: usize = 50;

struct Args {
    minutes: u64,
    out: PathBuf,
}

fn args() -> Args {
    let mut args = Args {
        minutes: 30,
        out: PathBuf::from("target/soak"),
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--minutes" => args.minutes = given.next().and_then(|m| m.parse().ok()).unwrap_or(30),
            "--out" => args.out = given.next().map(PathBuf::from).unwrap_or(args.out),
            _ => {
                eprintln!("usage: mcp-delegate-soak [--minutes N] [--out DIR]");
                std::process::exit(2);
            }
        }
    }
    args
}

/// One call of the mix and the outcome it must have.
struct Step {
    tool: &'static str,
    arguments: Value,
    /// `None`: success; else the tool error code.
    expect: Option<&'static str>,
}

fn step(n: u64) -> Step {
    let query = |sql: &str, params: Value| json!({"action": "query", "sql": sql, "params": params});
    match n % 10 {
        0..=4 => Step {
            tool: "sql1-delegate",
            arguments: query(
                "SELECT id, label FROM soak_items WHERE id = $1",
                json!([1 + n % 1000]),
            ),
            expect: None,
        },
        5 => Step {
            tool: "sql1-delegate",
            arguments: query(
                "SELECT id, label FROM soak_items WHERE id > $1 ORDER BY id LIMIT 100",
                json!([n % 800]),
            ),
            expect: None,
        },
        6 => Step {
            tool: "sql1-schema",
            arguments: json!({}),
            expect: None,
        },
        7 => Step {
            tool: "sql1-table-details",
            arguments: json!({"tableName": "soak_items"}),
            expect: None,
        },
        8 => Step {
            tool: "sql1-delegate",
            arguments: query(
                "SELECT query_to_xml('SELECT * FROM vault_data', true, true, '')",
                json!([]),
            ),
            expect: Some("SQL_FORBIDDEN_FUNCTION"),
        },
        _ => Step {
            tool: "sql1-delegate",
            arguments: query(
                "SELECT 1 / (id - id) FROM soak_items WHERE id = 1",
                json!([]),
            ),
            expect: Some("DATABASE_ERROR"),
        },
    }
}

/// What one call came to: did it match the mix's expectation.
fn check(step: &Step, status: u16, body: &str) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let value: Value = serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let result = &value["result"];
    let code = if result["isError"] == true {
        result["content"][0]["text"]
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|error| error["error"].as_str().map(str::to_owned))
    } else if result["isError"] == false {
        None
    } else {
        return Err(format!(
            "not a tool result: {}",
            &body[..body.len().min(200)]
        ));
    };
    if code.as_deref() == step.expect {
        Ok(())
    } else {
        Err(format!(
            "{}: expected {:?}, got {code:?}",
            step.tool, step.expect
        ))
    }
}

/// Calls, durations and unexpected outcomes, shared by the clients.
#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    durations_us: Mutex<Vec<u32>>,
    unexpected: Mutex<Vec<String>>,
}

struct Rig {
    _cluster: Cluster,
    idp: Arc<TestIdp>,
    host: Host,
    _plugins: tempfile::TempDir,
    tokens: Arc<Vec<String>>,
}

fn token(idp: &TestIdp, sub: &str) -> String {
    idp.mint(
        sub,
        "mcp-oauth",
        json!({"legacy_name": "reader", "roles": ["user", "sql-read"]}),
    )
}

fn start(out: &std::path::Path) -> Rig {
    let cluster = Cluster::start();
    cluster.exec("postgres", FIXTURE_SQL);
    cluster.exec(
        "postgres",
        "CREATE TABLE soak_items (id int PRIMARY KEY, label text NOT NULL);
         INSERT INTO soak_items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
         GRANT SELECT ON soak_items TO reader;",
    );
    let idp = Arc::new(TestIdp::start());
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let audit = out.join("audit.jsonl");
    let _ = std::fs::remove_file(&audit);
    let config = json!({
        "auth": auth_section(&idp),
        "audit": {"sink": audit.to_string_lossy()},
        "delegation": {"modules": {"postgresql1": module_entry(&cluster, json!({
            "pool": {"max": 8, "min": 0, "idleTimeoutMillis": 30000, "connectionTimeoutMillis": 3000}
        }))}}
    });
    let metrics = format!("127.0.0.1:{}", free_port());
    let host = Host::start_logging(
        &config,
        plugins.path(),
        &["--metrics-bind", &metrics],
        "warn,mcp_delegate::serve=info",
    );
    let tokens = (0..TOKEN_POOL)
        .map(|i| token(&idp, &format!("soak-regular-{i}")))
        .collect();
    Rig {
        _cluster: cluster,
        idp,
        host,
        _plugins: plugins,
        tokens: Arc::new(tokens),
    }
}

/// `CLIENTS` threads calling the mix until `stop`; each paced to
/// `per_client` calls/s (`None`: as fast as answers come).
fn run_clients(
    rig: &Rig,
    per_client: Option<f64>,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let url = rig.host.mcp_url();
    let fresh_users = Arc::new(AtomicU64::new(0));
    (0..CLIENTS)
        .map(|client| {
            let (url, tally, stop) = (url.clone(), tally.clone(), stop.clone());
            let (idp, tokens, fresh_users) =
                (rig.idp.clone(), rig.tokens.clone(), fresh_users.clone());
            std::thread::spawn(move || {
                let Ok((authority, path)) = split_url(&url) else {
                    return;
                };
                let mut http = Http1Client::new(authority, Duration::from_secs(30));
                let interval = per_client.map(|rate| Duration::from_secs_f64(1.0 / rate));
                let mut next_at = Instant::now();
                let mut n = client as u64 * 7;
                while !stop.load(Ordering::Relaxed) {
                    let step = step(n);
                    let token = if n % 20 == 19 {
                        let k = fresh_users.fetch_add(1, Ordering::Relaxed);
                        token(&idp, &format!("soak-new-{k}"))
                    } else {
                        tokens[(n as usize) % tokens.len()].clone()
                    };
                    let body = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                        "params": {"name": step.tool, "arguments": step.arguments}})
                    .to_string();
                    let headers = [
                        ("content-type".to_owned(), "application/json".to_owned()),
                        (
                            "accept".to_owned(),
                            "application/json, text/event-stream".to_owned(),
                        ),
                        ("mcp-protocol-version".to_owned(), "2025-06-18".to_owned()),
                        ("authorization".to_owned(), format!("Bearer {token}")),
                    ];
                    let started = Instant::now();
                    let outcome = http.post(path, &headers, &body);
                    let took = started.elapsed();
                    let verdict = match &outcome {
                        Ok((status, body)) => check(&step, *status, body),
                        Err(err) => Err(format!("transport: {err}")),
                    };
                    tally.calls.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut durations) = tally.durations_us.lock() {
                        durations.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    }
                    if let Err(problem) = verdict {
                        if let Ok(mut unexpected) = tally.unexpected.lock() {
                            unexpected.push(problem);
                        }
                    }
                    n += 1;
                    if let Some(interval) = interval {
                        next_at += interval;
                        let now = Instant::now();
                        if next_at > now {
                            std::thread::sleep(next_at - now);
                        } else {
                            next_at = now;
                        }
                    }
                }
            })
        })
        .collect()
}

fn p99_ms(durations: &mut [u32]) -> f64 {
    if durations.is_empty() {
        return 0.0;
    }
    durations.sort_unstable();
    let rank = ((durations.len() as f64 * 0.99).ceil() as usize).clamp(1, durations.len());
    f64::from(durations[rank - 1]) / 1000.0
}

/// Least-squares slope of `ys` over `xs`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

struct Row {
    minute: u64,
    rss_mib: f64,
    /// The host's threads (tokio's blocking threads come and go; glibc
    /// keeps the stacks of exited threads for reuse, resident).
    threads: usize,
    calls_per_second: f64,
    p99_ms: f64,
    unexpected: usize,
}

/// A small SVG: RSS (MiB) and calls/s per minute, each on its own scale.
fn svg(rows: &[Row], warmup: u64, verdict: &str) -> String {
    let (width, height, left, right, top, bottom) = (760.0, 360.0, 60.0, 60.0, 40.0, 40.0);
    let minutes = rows.last().map_or(1, |row| row.minute).max(1) as f64;
    let rss_max = rows.iter().map(|r| r.rss_mib).fold(1.0, f64::max) * 1.2;
    let cps_max = rows.iter().map(|r| r.calls_per_second).fold(1.0, f64::max) * 1.2;
    let x = |minute: u64| left + (width - left - right) * minute as f64 / minutes;
    let y = |value: f64, max: f64| top + (height - top - bottom) * (1.0 - value / max);
    let line = |value: &dyn Fn(&Row) -> f64, max: f64| {
        rows.iter()
            .map(|row| format!("{:.1},{:.1}", x(row.minute), y(value(row), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="20">mcp-delegate soak: RSS (MiB, blue, left) and calls/s (orange, right) per minute. {verdict}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<line x1="{}" y1="{top}" x2="{}" y2="{}" stroke="black"/>
<line x1="{}" y1="{top}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="4 3"/>
<text x="{}" y="{}">warm-up</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>
<polyline fill="none" stroke="#ff7f0e" stroke-width="2" points="{}"/>
<text x="{}" y="{}" text-anchor="end">{rss_max:.0}</text>
<text x="{}" y="{}" text-anchor="end">0</text>
<text x="{}" y="{}">{cps_max:.0}</text>
<text x="{}" y="{}">0</text>
<text x="{}" y="{}" text-anchor="middle">minute (0–{minutes:.0})</text>
</svg>
"##,
        height - bottom,
        width - right,
        height - bottom,
        height - bottom,
        width - right,
        width - right,
        height - bottom,
        x(warmup),
        x(warmup),
        height - bottom,
        x(warmup) + 4.0,
        top + 14.0,
        line(&|row| row.rss_mib, rss_max),
        line(&|row| row.calls_per_second, cps_max),
        left - 6.0,
        top + 4.0,
        left - 6.0,
        height - bottom,
        width - right + 6.0,
        top + 4.0,
        width - right + 6.0,
        height - bottom,
        (left + width - right) / 2.0,
        height - 12.0,
    );
    svg
}

fn main() {
    let args = args();
    std::fs::create_dir_all(&args.out).expect("output directory");
    // The audit file's path must be absolute.
    let args = Args {
        out: std::fs::canonicalize(&args.out).expect("output directory"),
        ..args
    };
    eprintln!("soak: setting up (cluster, IdP, host)...");
    let rig = start(&args.out);
    let pid = rig.host.pid();

    // The peak: closed loop, 20 s (the first 5 are warm-up).
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = run_clients(&rig, None, &tally, &stop);
    std::thread::sleep(Duration::from_secs(5));
    let before = tally.calls.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(15));
    let peak = (tally.calls.load(Ordering::Relaxed) - before) as f64 / 15.0;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    let peak_unexpected = tally.unexpected.lock().map_or(0, |u| u.len());
    let target = peak / 2.0;
    eprintln!(
        "soak: peak {peak:.0} calls/s with {CLIENTS} clients ({peak_unexpected} unexpected); \
         running {} minutes at {target:.0} calls/s",
        args.minutes
    );

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = run_clients(&rig, Some(target / CLIENTS as f64), &tally, &stop);
    let mut rows = Vec::new();
    let mut csv = String::from("minute,rss_mib,threads,calls_per_second,p99_ms,unexpected\n");
    let mut last_calls = 0;
    let mut examples: Vec<String> = Vec::new();
    let started = Instant::now();
    for minute in 1..=args.minutes {
        let wake = started + Duration::from_secs(60 * minute);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        let calls = tally.calls.load(Ordering::Relaxed);
        let mut durations = tally
            .durations_us
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        let unexpected = tally
            .unexpected
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default();
        examples.extend(unexpected.iter().take(3).cloned());
        let row = Row {
            minute,
            rss_mib: memory_mib(pid).0,
            threads: threads_of(pid),
            calls_per_second: (calls - last_calls) as f64 / 60.0,
            p99_ms: p99_ms(&mut durations),
            unexpected: unexpected.len(),
        };
        last_calls = calls;
        let _ = writeln!(
            csv,
            "{},{:.2},{},{:.1},{:.2},{}",
            row.minute, row.rss_mib, row.threads, row.calls_per_second, row.p99_ms, row.unexpected
        );
        eprintln!(
            "minute {:>3}: RSS {:.1} MiB, {} threads, {:.0} calls/s, p99 {:.2} ms, {} unexpected",
            row.minute, row.rss_mib, row.threads, row.calls_per_second, row.p99_ms, row.unexpected
        );
        rows.push(row);
        let _ = std::fs::write(args.out.join("soak.csv"), &csv);
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }

    let warmup = (args.minutes / 6).clamp(1, 5);
    let after: Vec<(f64, f64)> = rows
        .iter()
        .filter(|row| row.minute > warmup)
        .map(|row| (row.minute as f64, row.rss_mib * 1.048_576))
        .collect();
    let mb_per_10_min = slope(&after) * 10.0;
    let unexpected: usize = rows.iter().map(|row| row.unexpected).sum::<usize>() + peak_unexpected;
    let passed = mb_per_10_min < 1.0 && unexpected == 0;
    let verdict = format!(
        "RSS slope after minute {warmup}: {mb_per_10_min:+.3} MB/10 min; {unexpected} unexpected; {}",
        if passed { "PASS" } else { "FAIL" }
    );
    let _ = std::fs::write(args.out.join("soak.svg"), svg(&rows, warmup, &verdict));
    let total: f64 = rows.iter().map(|row| row.calls_per_second * 60.0).sum();
    println!(
        "soak: {} minutes, {total:.0} calls at {target:.0} calls/s (peak {peak:.0}); {verdict}",
        args.minutes
    );
    for example in examples.iter().take(10) {
        println!("  unexpected: {example}");
    }
    println!(
        "soak: wrote {} and {}",
        args.out.join("soak.csv").display(),
        args.out.join("soak.svg").display()
    );
    // `exit` skips destructors: stop the host and the cluster first.
    drop(rig);
    if !passed {
        std::process::exit(1);
    }
}
