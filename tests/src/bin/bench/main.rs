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
//! BENCH_WORKLOADS (a subset of "point,rows,details"), BENCH_AUDIT (a file:
//! the audit log on, written there). A run with either
//! filter prints its tables but leaves docs/benchmarks.md alone.

use std::sync::Arc;
use std::time::Duration;

use mcp_delegate_tests::bench::{http_load, memory_mib, pgbench, Check, Measurement, RequestFor};
use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::{TestIdp, CLIENT_ID, CLIENT_SECRET};
use mcp_delegate_tests::paths;
use mcp_delegate_tests::pg::{pg_bin_dir, Cluster};
use serde_json::json;

mod peers;

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

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Point,
    Rows100,
    TableDetails,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::Point => "point SELECT by primary key ($1)",
            Workload::Rows100 => "100-row SELECT",
            Workload::TableDetails => "table details",
        }
    }

    /// Its name in BENCH_WORKLOADS.
    fn key(self) -> &'static str {
        match self {
            Workload::Point => "point",
            Workload::Rows100 => "rows",
            Workload::TableDetails => "details",
        }
    }
}

/// A cheap deterministic spread of ids.
pub fn id_for(i: usize, modulo: usize) -> usize {
    (i.wrapping_mul(2_654_435_761) % modulo) + 1
}

fn mcp_headers(token: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
        ("mcp-protocol-version".to_owned(), "2025-06-18".to_owned()),
    ];
    if let Some(token) = token {
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    headers
}

fn our_request(workload: Workload, i: usize) -> String {
    let (name, arguments) = match workload {
        Workload::Point => (
            "sql1-delegate",
            json!({"action": "query", "sql": POINT_SQL, "params": [id_for(i, 10_000)]}),
        ),
        Workload::Rows100 => (
            "sql1-delegate",
            json!({"action": "query", "sql": ROWS_SQL, "params": [id_for(i, 9_000)]}),
        ),
        Workload::TableDetails => ("sql1-table-details", json!({"tableName": "items"})),
    };
    json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": arguments}}).to_string()
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

struct Row {
    workload: Workload,
    clients: usize,
    target: String,
    m: Measurement,
}

fn main() {
    let seconds = env_seconds();
    let clients_list = env_clients();
    let targets = env_filter("BENCH_TARGETS");
    let workloads = env_filter("BENCH_WORKLOADS");
    eprintln!("setting up: cluster, IdP, mcp-delegate (release)...");
    let cluster = Cluster::start();
    cluster.exec("postgres", FIXTURE);
    let idp = TestIdp::start();
    idp.add_user("bench", "bench_user", &["sql-read"]);
    let config = json!({
        "auth": {"trustedIDPs": [
            {"name": "requestor-jwt", "issuer": idp.issuer, "audience": "mcp-oauth", "jwksUri": idp.jwks_uri()},
            {"name": "te", "issuer": idp.issuer, "audience": "bench-db", "jwksUri": idp.jwks_uri()}
        ]},
        "delegation": {"modules": {"postgresql1": {
            "host": "127.0.0.1", "port": cluster.port, "database": "postgres",
            "user": "mcp_service", "password": "bench",
            "pool": {"max": 10, "min": 4, "idleTimeoutMillis": 60000, "connectionTimeoutMillis": 10000},
            "tokenExchange": {"idpName": "te", "tokenEndpoint": idp.token_endpoint(),
                "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "audience": "bench-db",
                "cache": {"enabled": true, "ttlSeconds": 300}}
        }}}
    });
    let mut config = config;
    // BENCH_AUDIT=FILE: the audit log on, to FILE (what it costs).
    if let Ok(path) = std::env::var("BENCH_AUDIT") {
        config["audit"] = json!({"sink": path});
    }
    // Per-call info logs off, as for the peers' defaults under load.
    let mut host = Host::start_logging(
        &config,
        &paths::build_dir(),
        &[],
        "warn,mcp_delegate::serve=info",
    );
    let url = host.mcp_url();
    let warm_token = idp.mint("bench", "mcp-oauth", json!({"roles": ["user"]}));
    host.bearer = Some(warm_token.clone());
    host.call_tool("user-info", json!({}));
    let idle_ours = memory_mib(host.pid()).0;

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
    let peers = peers::start_all(&cluster, |key| selected(&targets, key));
    let mut rows: Vec<Row> = Vec::new();
    let mut cold_offset = 0usize;
    for workload in [Workload::Point, Workload::Rows100, Workload::TableDetails] {
        if !selected(&workloads, workload.key()) {
            continue;
        }
        for &clients in &clients_list {
            eprintln!("{} / {clients} clients", workload.label());
            let token = warm_token.clone();
            let target = url.clone();
            let warm: RequestFor = Arc::new(move |i| {
                (
                    target.clone(),
                    mcp_headers(Some(&token)),
                    our_request(workload, i),
                )
            });
            if selected(&targets, "warm") {
                rows.push(Row {
                    workload,
                    clients,
                    target: "mcp-delegate (token caches warm)".into(),
                    m: http_load(clients, seconds, warm, mcp_ok()),
                });
            }

            let tokens = cold_tokens.clone();
            let target = url.clone();
            let offset = cold_offset;
            let cold: RequestFor = Arc::new(move |i| {
                let token = &tokens[(offset + i) % tokens.len()];
                (
                    target.clone(),
                    mcp_headers(Some(token)),
                    our_request(workload, i),
                )
            });
            if selected(&targets, "cold") {
                let m = http_load(clients, seconds, cold, mcp_ok());
                cold_offset +=
                    (m.calls_per_second * (seconds.as_secs_f64() + 0.5)) as usize + clients;
                rows.push(Row {
                    workload,
                    clients,
                    target: "mcp-delegate (token caches cold)".into(),
                    m,
                });
            }

            if workload != Workload::TableDetails && selected(&targets, "pgbench") {
                let query = if workload == Workload::Point {
                    "SELECT * FROM items WHERE id = :id;"
                } else {
                    "SELECT * FROM items WHERE id > :id ORDER BY id LIMIT 100;"
                };
                let modulo = if workload == Workload::Point {
                    10_000
                } else {
                    9_000
                };
                let delegated = format!(
                    "\\set id random(1, {modulo})\nBEGIN READ ONLY;\nSET LOCAL ROLE bench_user;\n{query}\nROLLBACK;\n"
                );
                let bare = format!("\\set id random(1, {modulo})\n{query}\n");
                let bin = pg_bin_dir();
                rows.push(Row {
                    workload,
                    clients,
                    target: "pgbench: delegated transaction (floor)".into(),
                    m: pgbench(
                        &bin,
                        cluster.port,
                        "mcp_service",
                        "postgres",
                        &delegated,
                        clients,
                        seconds,
                    ),
                });
                rows.push(Row {
                    workload,
                    clients,
                    target: "pgbench: bare query".into(),
                    m: pgbench(
                        &bin,
                        cluster.port,
                        "postgres",
                        "postgres",
                        &bare,
                        clients,
                        seconds,
                    ),
                });
            }
            for peer in &peers {
                if let Some(request) = peer.request_for(workload) {
                    rows.push(Row {
                        workload,
                        clients,
                        target: peer.name.clone(),
                        m: http_load(clients, seconds, request, peer.check()),
                    });
                }
            }
        }
    }
    if cold_offset > cold_count {
        eprintln!("note: cold-cache runs reused tokens (the figures are an upper bound)");
    }
    let peak_ours = memory_mib(host.pid()).1;
    let memory: Vec<(String, f64, f64)> =
        std::iter::once(("mcp-delegate".to_owned(), idle_ours, peak_ours))
            .chain(
                peers
                    .iter()
                    .map(|p| (p.name.clone(), p.idle_mib, p.memory().1)),
            )
            .collect();
    let report = render(
        &rows,
        &memory,
        seconds,
        &clients_list,
        cold_offset > cold_count,
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

fn find<'a>(
    rows: &'a [Row],
    workload: Workload,
    clients: usize,
    target: &str,
) -> Option<&'a Measurement> {
    rows.iter()
        .find(|r| r.workload == workload && r.clients == clients && r.target == target)
        .map(|r| &r.m)
}

fn render(
    rows: &[Row],
    memory: &[(String, f64, f64)],
    seconds: Duration,
    clients: &[usize],
    reused: bool,
) -> String {
    let machine = mcp_delegate_tests::bench::machine_description();
    let mut out = String::new();
    out.push_str(&format!(
        "## Tool calls against the floor and the peers\n\nMachine: {machine}; load generator, servers and PostgreSQL share them. \
         {}s per cell after a 0.3s warm-up; one run (the machine is shared and noisy: read ratios). \
         Generated by `target/release/mcp-delegate-bench`.\n\n",
        seconds.as_secs()
    ));
    if reused {
        out.push_str("Note: the cold-cache runs ran out of fresh tokens and reused some; their figures are an upper bound.\n\n");
    }
    for workload in [Workload::Point, Workload::Rows100, Workload::TableDetails] {
        out.push_str(&format!("### {}\n\n| clients | target | calls/s | p50 ms | p95 ms | p99 ms | errors |\n| --- | --- | --- | --- | --- | --- | --- |\n", workload.label()));
        for &c in clients {
            for row in rows
                .iter()
                .filter(|r| r.workload == workload && r.clients == c)
            {
                let m = row.m;
                out.push_str(&format!(
                    "| {c} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |\n",
                    row.target, m.calls_per_second, m.p50_ms, m.p95_ms, m.p99_ms, m.errors
                ));
            }
        }
        out.push('\n');
        out.push_str("Ratios (mcp-delegate with warm caches ÷ other; throughput higher is better, p99 lower is better):\n\n| clients | vs | throughput ratio | p99 ratio |\n| --- | --- | --- | --- |\n");
        for &c in clients {
            let Some(ours) = find(rows, workload, c, "mcp-delegate (token caches warm)") else {
                continue;
            };
            for row in rows.iter().filter(|r| {
                r.workload == workload
                    && r.clients == c
                    && !r.target.starts_with("mcp-delegate")
                    && r.m.calls_per_second > 0.0
            }) {
                out.push_str(&format!(
                    "| {c} | {} | {:.2} | {:.2} |\n",
                    row.target,
                    ours.calls_per_second / row.m.calls_per_second.max(1e-9),
                    ours.p99_ms / row.m.p99_ms.max(1e-9)
                ));
            }
        }
        out.push('\n');
    }
    out.push_str("### Resident memory (MiB)\n\n| server | idle | peak during the run |\n| --- | --- | --- |\n");
    for (name, idle, peak) in memory {
        out.push_str(&format!("| {name} | {idle:.1} | {peak:.1} |\n"));
    }
    out
}
