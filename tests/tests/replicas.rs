//! Scaling out: three host replicas behind a real nginx (round-robin,
//! keep-alive upstreams), all through one PgBouncer in transaction mode to
//! one PostgreSQL, with token exchange, driven by the official Python MCP
//! client in both protocol forms while one replica is stopped and started
//! again. No call fails but the ones in flight at the stop (which the client
//! retries), every call runs as its own user's role, and each replica
//! verifies and exchanges on its own (per-replica caches).

use std::process::Command;
use std::time::{Duration, Instant};

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::{TestIdp, CLIENT_ID, CLIENT_SECRET};
use mcp_delegate_tests::nginx::Nginx;
use mcp_delegate_tests::paths::{plugin_dir, plugin_library, workspace_root};
use mcp_delegate_tests::pg::{Cluster, PgVersion};
use mcp_delegate_tests::pgbouncer::PgBouncer;
use mcp_delegate_tests::pgfixture::{module_entry, FIXTURE_SQL};
use serde_json::{json, Value};

const SECONDS: f64 = 9.0;

fn replica_config(idp: &TestIdp, bouncer: &PgBouncer, cluster: &Cluster) -> Value {
    let mut entry = module_entry(
        cluster,
        json!({
            "pooler": "pgbouncer-transaction",
            "pool": {"max": 4, "min": 0, "connectionTimeoutMillis": 3000},
            "tokenExchange": {
                "idpName": "sql-delegation-te-jwt",
                "tokenEndpoint": idp.token_endpoint(),
                "clientId": CLIENT_ID,
                "clientSecret": CLIENT_SECRET,
                "audience": "primary-db",
                "requiredClaim": "legacy_name",
                "cache": {"enabled": true, "ttlSeconds": 300}
            }
        }),
    );
    entry["port"] = json!(bouncer.port);
    json!({
        "auth": {"trustedIDPs": [
            {"name": "requestor-jwt", "issuer": idp.issuer, "audience": "mcp-oauth",
             "jwksUri": idp.jwks_uri()},
            {"name": "sql-delegation-te-jwt", "issuer": idp.issuer, "audience": "primary-db",
             "jwksUri": idp.jwks_uri()}
        ]},
        "delegation": {"modules": {"postgresql1": entry}}
    })
}

#[test]
fn three_replicas_behind_nginx_survive_a_restart_and_never_cross_identities() {
    let cluster = Cluster::start_version(PgVersion::V15);
    cluster.exec("postgres", FIXTURE_SQL);
    // Three replicas × pool.max 4 client connections, 4 server sessions.
    let bouncer = PgBouncer::start(&cluster, 4);
    let idp = TestIdp::start();
    let users = [
        ("alice", "reader"),
        ("bob", "writer"),
        ("carol", "DOMAIN\\odd \"user\""),
    ];
    for (sub, role) in users {
        idp.add_user(sub, role, &["sql-read"]);
    }
    let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
    let config = replica_config(&idp, &bouncer, &cluster);
    let mut replicas: Vec<Host> = (0..3)
        .map(|_| Host::start(&config, plugins.path()))
        .collect();
    let ports: Vec<u16> = replicas.iter().map(Host::port).collect();
    let nginx = Nginx::start(&ports);

    let tokens: Vec<Value> = users
        .iter()
        .map(|(sub, role)| {
            json!({"name": sub, "role": role,
                   "token": idp.mint(sub, "mcp-oauth", json!({"roles": ["user"]}))})
        })
        .collect();
    let python = workspace_root().join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: the README's test command installs the Python MCP client",
        python.display()
    );
    let clients: Vec<_> = ["legacy", "auto"]
        .iter()
        .map(|mode| {
            Command::new(&python)
                .arg(workspace_root().join("tests/interop/replica_client.py"))
                .args([nginx.url(), (*mode).to_owned(), SECONDS.to_string()])
                .env("MCP_USERS", Value::Array(tokens.clone()).to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run the Python client")
        })
        .collect();

    // Under load: stop replica 1 (SIGTERM: it drains its calls in flight),
    // keep it down, start it again on the same port.
    std::thread::sleep(Duration::from_secs(2));
    let exit = replicas[1].terminate(Duration::from_secs(10));
    assert_eq!(exit, Some(0), "the replica did not stop cleanly");
    let stopped_at = unix_now();
    std::thread::sleep(Duration::from_millis(2500));
    let restarted = Host::start_on_port(&config, plugins.path(), ports[1]);
    let restarted_at = unix_now();
    replicas[1] = restarted;
    let started = Instant::now();

    let mut total_calls = 0;
    let mut total_retried = 0;
    for (mode, client) in ["legacy", "auto"].iter().zip(clients) {
        let out = client.wait_with_output().expect("Python client");
        assert!(
            out.status.success(),
            "Python client ({mode}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
        assert_eq!(stats["failed"], 0, "{mode}: {stats}");
        assert_eq!(stats["crossed"], 0, "{mode}: {stats}");
        assert!(
            stats["calls"].as_u64().unwrap_or(0) >= 100,
            "{mode}: {stats}"
        );
        total_calls += stats["calls"].as_u64().unwrap_or(0);
        total_retried += stats["retried"].as_u64().unwrap_or(0);
        eprintln!("{mode}: {stats}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // At most one call per client was in flight when the replica stopped.
    assert!(
        total_retried <= users.len() as u64 * 2,
        "{total_retried} of {total_calls} calls needed a retry"
    );

    // Every replica served, the restarted one too after its restart.
    let log = nginx.access_log();
    let target = |port: u16| format!("127.0.0.1:{port}");
    for port in &ports {
        let served = log
            .iter()
            .filter(|(_, upstream, status)| upstream.ends_with(&target(*port)) && *status == 200)
            .count();
        assert!(served > 20, "replica on {port} served {served} calls");
    }
    let after_restart = log
        .iter()
        .filter(|(at, upstream, status)| {
            *at > restarted_at && upstream.ends_with(&target(ports[1])) && *status == 200
        })
        .count();
    assert!(
        after_restart > 10,
        "the restarted replica served {after_restart}"
    );
    let during_stop = log
        .iter()
        .filter(|(at, upstream, status)| {
            *at > stopped_at + 0.5
                && *at < restarted_at - 0.5
                && upstream == &target(ports[1])
                && *status == 200
        })
        .count();
    assert_eq!(during_stop, 0, "the stopped replica served calls");

    // Per-replica caches: each replica (four processes, one restarted)
    // exchanged each user's token at most once.
    for (sub, _) in users {
        let exchanges = idp.exchanges_for(sub);
        assert!(
            (1..=4).contains(&exchanges),
            "{sub}: {exchanges} exchanges for four replica processes"
        );
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
