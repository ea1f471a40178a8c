//! `mcp-delegate-bench`: mcp-delegate against the floor (pgbench running the
//! same delegated transaction, and the bare query) and, when installed, the
//! peers (MCP Toolbox for Databases, DBHub), on one machine in one run.
//! Writes the results into docs/benchmarks.md.
//!
//! Run: `cargo build --release --workspace && target/release/mcp-delegate-bench`
//! Options (environment): BENCH_SECONDS (per cell, default 4),
//! BENCH_CLIENTS (default "1,4,16,64"), BENCH_PEERS_DIR (where
//! tests/bench/install-peers.sh put the peers; default target/peers),
//! BENCH_TARGETS (a subset of "warm,cold,pgbench,toolbox,dbhub") and
//! BENCH_WORKLOADS (a subset of "point,literal,rows,details"),
//! BENCH_REPEATS (each cell's repeats, default 3; medians are reported),
//! BENCH_POOL_MAX (the module's pool.max, default 4 as Toolbox's pool here),
//! BENCH_PIN=1 (PostgreSQL on CPU 1, the rest on CPU 0),
//! BENCH_AUDIT (where the audit log goes, default a temporary file; "off"
//! for none), BENCH_METRICS ("off": no metrics endpoint). Targets: "warm"
//! and "modern" (ours, warm token caches, the legacy and the 2026-07-28
//! request form), "cold" (a new token per call), "pgbench", "toolbox",
//! "dbhub", and, only when named, "pooled" (ours through PgBouncer in
//! transaction mode; its server CPU is the host's and PgBouncer's). A run with either filter prints its tables but leaves
//! docs/benchmarks.md alone.

use std::sync::Arc;
use std::time::Duration;

use mcp_delegate_tests::bench::{
    http_load, memory_mib, pgbench, tree_cpu_seconds, Check, Measurement, RequestFor,
};
use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::{TestIdp, CLIENT_ID, CLIENT_SECRET};
use mcp_delegate_tests::paths;
use mcp_delegate_tests::pg::{free_port, pg_bin_dir, Cluster};
use mcp_delegate_tests::pgbouncer::PgBouncer;
use serde_json::json;

mod peers;
mod report;

use report::{Cell, Memory, Settings};

/// The test clusters take passwords (SCRAM) over TCP, as the module
/// requires: every role the benchmark logs in as over TCP has `bench`.
const FIXTURE: &str = r#"
ALTER ROLE postgres PASSWORD 'bench';
CREATE ROLE mcp_service LOGIN NOINHERIT PASSWORD 'bench';
CREATE ROLE bench_user NOLOGIN;
GRANT bench_user TO mcp_service;
CREATE TABLE items (
    id int PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), tags text[]
);
COMMENT ON TABLE items IS 'Benchmark items';
INSERT INTO items SELECT g, 'item ' || g, (g % 1000) / 10.0, now() - g * interval '1 minute', ARRAY['a', 'b']
  FROM generate_series(1, 10000) g;
GRANT SELECT ON items TO bench_user;
ANALYZE items;
"#;

const POINT_SQL: &str = "SELECT * FROM items WHERE id = $1";
const ROWS_SQL: &str = "SELECT * FROM items WHERE id > $1 ORDER BY id LIMIT 100";

/// The point query with its id written into the text: a new statement
/// text on (almost) every call, as an agent writing SQL sends them.
pub fn literal_sql(i: usize) -> String {
    format!("SELECT * FROM items WHERE id = {}", id_for(i, 10_000))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Point,
    Literal,
    Rows100,
    TableDetails,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Point,
        Workload::Literal,
        Workload::Rows100,
        Workload::TableDetails,
    ];

    fn label(self) -> &'static str {
        match self {
            Workload::Point => "point SELECT by primary key ($1)",
            Workload::Literal => "point SELECT, id spliced into the SQL text",
            Workload::Rows100 => "100-row SELECT",
            Workload::TableDetails => "table details",
        }
    }

    /// Its name in BENCH_WORKLOADS.
    fn key(self) -> &'static str {
        match self {
            Workload::Point => "point",
            Workload::Literal => "literal",
            Workload::Rows100 => "rows",
            Workload::TableDetails => "details",
        }
    }
}

/// A cheap deterministic spread of ids.
pub fn id_for(i: usize, modulo: usize) -> usize {
    (i.wrapping_mul(2_654_435_761) % modulo) + 1
}

/// Which of the two protocol forms a request of ours takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// No `_meta`, protocol header 2025-06-18.
    Legacy,
    /// 2026-07-28: `_meta` with the version and capabilities, and the
    /// `Mcp-Method` and `Mcp-Name` headers.
    Modern,
}

fn mcp_headers(token: Option<&str>, form: Form, tool: &str) -> Vec<(String, String)> {
    let version = match form {
        Form::Legacy => "2025-06-18",
        Form::Modern => "2026-07-28",
    };
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
        ("mcp-protocol-version".to_owned(), version.to_owned()),
    ];
    if form == Form::Modern {
        headers.push(("mcp-method".to_owned(), "tools/call".to_owned()));
        headers.push(("mcp-name".to_owned(), tool.to_owned()));
    }
    if let Some(token) = token {
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    headers
}

/// Our tool and its arguments for call `i`.
fn our_call(workload: Workload, i: usize) -> (&'static str, serde_json::Value) {
    match workload {
        Workload::Point => (
            "sql1-delegate",
            json!({"action": "query", "sql": POINT_SQL, "params": [id_for(i, 10_000)]}),
        ),
        Workload::Literal => (
            "sql1-delegate",
            json!({"action": "query", "sql": literal_sql(i)}),
        ),
        Workload::Rows100 => (
            "sql1-delegate",
            json!({"action": "query", "sql": ROWS_SQL, "params": [id_for(i, 9_000)]}),
        ),
        Workload::TableDetails => ("sql1-table-details", json!({"tableName": "items"})),
    }
}

/// Call `i` of `workload` to our server, as `token`, in `form`.
fn our_requests(url: &str, workload: Workload, form: Form, token: TokenSource) -> RequestFor {
    let url = url.to_owned();
    Arc::new(move |i| {
        let (tool, arguments) = our_call(workload, i);
        let mut params = json!({"name": tool, "arguments": arguments});
        if form == Form::Modern {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            });
        }
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params});
        (
            url.clone(),
            mcp_headers(Some(token.for_call(i)), form, tool),
            body.to_string(),
        )
    })
}

/// The bearer token of each call: always the same one (caches warm), or a
/// new one per call from a pre-minted list (caches cold).
#[derive(Clone)]
enum TokenSource {
    Warm(Arc<String>),
    Cold(Arc<Vec<String>>, usize),
}

impl TokenSource {
    fn for_call(&self, i: usize) -> &str {
        match self {
            TokenSource::Warm(token) => token,
            TokenSource::Cold(tokens, offset) => &tokens[(offset + i) % tokens.len()],
        }
    }
}

fn mcp_ok() -> Check {
    Arc::new(|body: &str| body.contains("\"result\"") && !body.contains("\"isError\":true"))
}

fn env_seconds() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4),
    )
}

fn env_clients() -> Vec<usize> {
    std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16, 64])
}

/// The comma-separated subset named by an environment variable (None: all).
fn env_filter(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|s| {
        s.split(',')
            .map(|item| item.trim().to_ascii_lowercase())
            .filter(|item| !item.is_empty())
            .collect()
    })
}

fn selected(filter: &Option<Vec<String>>, item: &str) -> bool {
    filter
        .as_ref()
        .is_none_or(|items| items.iter().any(|i| i == item))
}

pub const OURS: &str = "mcp-delegate";
pub const OURS_MODERN: &str = "mcp-delegate, 2026-07-28 form";
pub const OURS_POOLED: &str = "mcp-delegate via PgBouncer (transaction mode)";
const OURS_COLD: &str = "mcp-delegate, token caches cold";
const PGBENCH_FLOOR: &str = "pgbench: delegated transaction (floor)";
const PGBENCH_BARE: &str = "pgbench: bare query";

/// Runs one cell, reading the CPU counters of the server process tree and
/// of PostgreSQL (the postmaster and its backends, reaped ones included)
/// around it. CPU per call counts the warm-up's calls too (0.3 s of them,
/// at the measured rate).
fn measured(
    seconds: Duration,
    server: Option<u32>,
    postgres: Option<u32>,
    run: impl FnOnce() -> Measurement,
) -> (Measurement, Option<f64>, Option<f64>) {
    measured_trees(seconds, server.as_slice(), postgres, run)
}

/// As [`measured`], the server being several process trees (the host and
/// PgBouncer).
fn measured_trees(
    seconds: Duration,
    servers: &[u32],
    postgres: Option<u32>,
    run: impl FnOnce() -> Measurement,
) -> (Measurement, Option<f64>, Option<f64>) {
    let servers_cpu = || -> Option<f64> {
        (!servers.is_empty()).then(|| servers.iter().map(|&pid| tree_cpu_seconds(pid)).sum())
    };
    let before = (servers_cpu(), postgres.map(tree_cpu_seconds));
    let m = run();
    let calls = m.calls_per_second * (seconds.as_secs_f64() + 0.3);
    let server_us = match before.0 {
        Some(before) if calls > 0.0 => servers_cpu().map(|after| (after - before) / calls * 1e6),
        _ => None,
    };
    let per_call = |pid: Option<u32>, before: Option<f64>| {
        let (pid, before) = (pid?, before?);
        (calls > 0.0).then(|| (tree_cpu_seconds(pid) - before) / calls * 1e6)
    };
    let pg_us = per_call(postgres, before.1);
    (m, server_us, pg_us)
}

fn env_repeats() -> usize {
    std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3)
}

fn main() {
    let seconds = env_seconds();
    let clients_list = env_clients();
    let repeats = env_repeats();
    let targets = env_filter("BENCH_TARGETS");
    let workloads = env_filter("BENCH_WORKLOADS");
    eprintln!("setting up: cluster, IdP, mcp-delegate (release)...");
    // BENCH_PIN=1: PostgreSQL on CPU 1, everything else (this harness,
    // its load threads, the servers under test) on CPU 0: what the
    // servers do when the database does not compete for their core.
    let pinned = std::env::var("BENCH_PIN").is_ok_and(|v| v == "1");
    if pinned {
        pin(std::process::id(), "0");
    }
    let cluster = Cluster::start();
    cluster.exec("postgres", FIXTURE);
    let postgres_pid = cluster.postmaster_pid();
    if let (true, Some(pid)) = (pinned, postgres_pid) {
        // Backends forked from now on inherit the postmaster's CPU.
        pin(pid, "1");
        for child in std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            pin(child, "1");
        }
    }
    let idp = TestIdp::start();
    idp.add_user("bench", "bench_user", &["sql-read"]);
    // BENCH_POOL_MAX: the module's pool.max; by default 4, what MCP
    // Toolbox's pgx pool holds on this machine (max(4, cores)): on two
    // cores shared with PostgreSQL, more backends only lengthen the tail.
    let pool_max: u32 = std::env::var("BENCH_POOL_MAX")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut config = json!({
        "auth": {"trustedIDPs": [
            {"name": "requestor-jwt", "issuer": idp.issuer, "audience": "mcp-oauth", "jwksUri": idp.jwks_uri()},
            {"name": "te", "issuer": idp.issuer, "audience": "bench-db", "jwksUri": idp.jwks_uri()}
        ]},
        "delegation": {"modules": {"postgresql1": {
            "host": "127.0.0.1", "port": cluster.port, "database": "postgres",
            "user": "mcp_service", "password": "bench",
            "pool": {"max": pool_max, "min": pool_max.min(4), "idleTimeoutMillis": 60000, "connectionTimeoutMillis": 10000},
            "tokenExchange": {"idpName": "te", "tokenEndpoint": idp.token_endpoint(),
                "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "audience": "bench-db",
                "cache": {"enabled": true, "ttlSeconds": 300}}
        }}}
    });
    // Everything on, as in production: the audit log to a file
    // (BENCH_AUDIT=FILE to choose it, =off for none) and the metrics
    // endpoint (BENCH_METRICS=off for none).
    let audit_dir = tempfile::tempdir().expect("temp dir");
    let audit = match std::env::var("BENCH_AUDIT") {
        Ok(off) if off == "off" => None,
        Ok(path) => Some(path),
        Err(_) => Some(audit_dir.path().join("audit.jsonl").display().to_string()),
    };
    if let Some(path) = &audit {
        config["audit"] = json!({"sink": path});
    }
    let metrics_bind = format!("127.0.0.1:{}", free_port());
    let metrics_on = std::env::var("BENCH_METRICS").map_or(true, |v| v != "off");
    let mut extra_args: Vec<&str> = Vec::new();
    if metrics_on {
        extra_args.extend(["--metrics-bind", &metrics_bind]);
    }
    // Per-call info logs off, as for the peers' defaults under load.
    let mut host = Host::start_logging(
        &config,
        &paths::build_dir(),
        &extra_args,
        "warn,mcp_delegate::serve=info",
    );
    let url = host.mcp_url();
    let warm_token = idp.mint("bench", "mcp-oauth", json!({"roles": ["user"]}));
    host.bearer = Some(warm_token.clone());
    let host_token = host.bearer.clone();
    host.call_tool("user-info", json!({}));
    let idle_ours = memory_mib(host.pid()).0;
    let ours = Some(host.pid());
    let warm = TokenSource::Warm(Arc::new(warm_token));

    // BENCH_TARGETS=…,pooled (never by default): a second server whose
    // module reaches PostgreSQL through PgBouncer in transaction mode, with
    // as many server connections as the direct module's pool.
    let pooled = targets
        .as_ref()
        .is_some_and(|t| t.iter().any(|t| t == "pooled"))
        .then(|| {
            let bouncer = PgBouncer::start_as(&cluster, pool_max, "mcp_service", "bench");
            let mut config = config.clone();
            let entry = &mut config["delegation"]["modules"]["postgresql1"];
            entry["port"] = json!(bouncer.port);
            entry["pooler"] = json!("pgbouncer-transaction");
            let mut host = Host::start_logging(
                &config,
                &paths::build_dir(),
                &[],
                "warn,mcp_delegate::serve=info",
            );
            host.bearer = host_token.clone();
            host.call_tool("user-info", json!({}));
            (bouncer, host)
        });
    let peers = peers::start_all(&cluster, |key| selected(&targets, key));
    let mut samples: Vec<Cell> = Vec::new();
    let selected_workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| selected(&workloads, w.key()))
        .collect();
    // Each cell's targets run one after the other, and the whole cell is
    // repeated: the machine's noise falls on all of them alike.
    for &workload in &selected_workloads {
        for &clients in &clients_list {
            for repeat in 1..=repeats {
                eprintln!(
                    "{} / {clients} clients / repeat {repeat} of {repeats}",
                    workload.label()
                );
                let mut record = |target: &str, servers: &[u32], run: &dyn Fn() -> Measurement| {
                    let (m, server_us, pg_us) = measured_trees(seconds, servers, postgres_pid, run);
                    samples.push(Cell {
                        workload,
                        clients,
                        target: target.to_owned(),
                        m,
                        server_us,
                        pg_us,
                    });
                };
                for (key, name, form) in [
                    ("warm", OURS, Form::Legacy),
                    ("modern", OURS_MODERN, Form::Modern),
                ] {
                    if selected(&targets, key) {
                        let requests = our_requests(&url, workload, form, warm.clone());
                        record(name, ours.as_slice(), &|| {
                            http_load(clients, seconds, requests.clone(), mcp_ok())
                        });
                    }
                }
                if let Some((bouncer, pooled_host)) = &pooled {
                    let requests =
                        our_requests(&pooled_host.mcp_url(), workload, Form::Legacy, warm.clone());
                    let servers = [pooled_host.pid(), bouncer.pid()];
                    record(OURS_POOLED, &servers, &|| {
                        http_load(clients, seconds, requests.clone(), mcp_ok())
                    });
                }
                if workload != Workload::TableDetails && selected(&targets, "pgbench") {
                    let (delegated, bare) = pgbench_scripts(workload);
                    let bin = pg_bin_dir();
                    let port = cluster.port;
                    record(PGBENCH_FLOOR, &[], &|| {
                        pgbench(
                            &bin,
                            port,
                            "mcp_service",
                            "postgres",
                            &delegated,
                            clients,
                            seconds,
                        )
                    });
                    record(PGBENCH_BARE, &[], &|| {
                        pgbench(&bin, port, "postgres", "postgres", &bare, clients, seconds)
                    });
                }
                for peer in &peers {
                    if let Some(request) = peer.request_for(workload) {
                        record(&peer.name, &[peer.pid()], &|| {
                            http_load(clients, seconds, request.clone(), peer.check())
                        });
                    }
                }
            }
        }
    }
    let peak_warm = memory_mib(host.pid()).1;

    // Cold tokens last, once per cell: they fill the token caches, and the
    // peak memory with warm tokens is read before them.
    let mut cold_reused = false;
    if selected(&targets, "cold") {
        let cold_count: usize = std::env::var("BENCH_COLD_TOKENS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40_000);
        eprintln!("minting {cold_count} tokens for the cold-cache runs...");
        let cold_tokens: Arc<Vec<String>> = Arc::new(
            (0..cold_count)
                .map(|i| {
                    idp.mint(
                        "bench",
                        "mcp-oauth",
                        json!({"roles": ["user"], "jti": format!("cold-{i}")}),
                    )
                })
                .collect(),
        );
        let mut offset = 0usize;
        for &workload in &selected_workloads {
            for &clients in &clients_list {
                eprintln!("{} / {clients} clients / cold tokens", workload.label());
                let requests = our_requests(
                    &url,
                    workload,
                    Form::Legacy,
                    TokenSource::Cold(cold_tokens.clone(), offset),
                );
                let (m, server_us, pg_us) = measured(seconds, ours, postgres_pid, || {
                    http_load(clients, seconds, requests, mcp_ok())
                });
                offset += (m.calls_per_second * (seconds.as_secs_f64() + 0.5)) as usize + clients;
                samples.push(Cell {
                    workload,
                    clients,
                    target: OURS_COLD.to_owned(),
                    m,
                    server_us,
                    pg_us,
                });
            }
        }
        cold_reused = offset > cold_count;
        if cold_reused {
            eprintln!("note: cold-cache runs reused tokens (the figures are an upper bound)");
        }
    }
    let peak_ours = memory_mib(host.pid()).1;
    let mut memory = vec![Memory {
        name: OURS.to_owned(),
        idle: idle_ours,
        peak_warm: Some(peak_warm),
        peak: peak_ours,
    }];
    memory.extend(peers.iter().map(|p| Memory {
        name: p.name.clone(),
        idle: p.idle_mib,
        peak_warm: None,
        peak: p.memory().1,
    }));
    let rows = report::medians(&samples);
    let settings = Settings {
        seconds,
        repeats,
        audit: audit.is_some(),
        metrics: metrics_on,
        cold_reused,
        pinned,
    };
    let report = report::render(
        &rows,
        &memory,
        &settings,
        &clients_list,
        &selected_workloads,
    );
    println!("{report}");
    if targets.is_some() || workloads.is_some() {
        eprintln!("a filtered run: docs/benchmarks.md left as it was");
        return;
    }
    let doc_path = paths::workspace_root().join("docs/benchmarks.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_default();
    let (begin, end) = ("<!-- bench:main -->", "<!-- /bench:main -->");
    let updated = match (doc.find(begin), doc.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{begin}\n{report}\n{}", &doc[..a], &doc[b..]),
        _ => format!("{doc}\n{begin}\n{report}\n{end}\n"),
    };
    if std::fs::write(&doc_path, updated).is_ok() {
        eprintln!("wrote {}", doc_path.display());
    }
    drop(peers);
}

/// Binds every thread of process `pid` to the CPUs in `list` (taskset).
fn pin(pid: u32, list: &str) {
    let pinned = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", list, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(pinned, "taskset could not pin {pid} to CPU {list}");
}

/// pgbench's scripts for a workload: the delegated transaction and the
/// bare query (pgbench's default simple protocol writes `:id` into the
/// text, so the literal workload is the same for it).
fn pgbench_scripts(workload: Workload) -> (String, String) {
    let (query, modulo) = if workload == Workload::Rows100 {
        (
            "SELECT * FROM items WHERE id > :id ORDER BY id LIMIT 100;",
            9_000,
        )
    } else {
        ("SELECT * FROM items WHERE id = :id;", 10_000)
    };
    (
        format!(
            "\\set id random(1, {modulo})\nBEGIN READ ONLY;\nSET LOCAL ROLE bench_user;\n{query}\nROLLBACK;\n"
        ),
        format!("\\set id random(1, {modulo})\n{query}\n"),
    )
}
