//! `mcp-delegate-demo`: two throwaway PostgreSQL clusters with sample data,
//! and mcp-delegate serving them as `sql1-*` and `sql2-*`. Ctrl-C stops
//! everything and removes the temporary data.

use std::sync::mpsc;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::paths;
use mcp_delegate_tests::pg::Cluster;
use serde_json::json;

const APP_FIXTURE: &str = r#"
CREATE ROLE mcp_service LOGIN NOINHERIT PASSWORD 'demo-service';
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
COMMENT ON TABLE users IS 'People who use the app';
CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id),
                     total numeric(10,2) NOT NULL, created_at timestamptz DEFAULT now());
INSERT INTO users (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', 'grace@example.com');
INSERT INTO orders (user_id, total) VALUES (1, 42.50), (2, 19.99), (1, 7.25);
"#;

const ANALYTICS_TABLES: &str = r#"
CREATE TABLE daily_sales (date date PRIMARY KEY, total_revenue numeric(12,2) NOT NULL);
COMMENT ON TABLE daily_sales IS 'Revenue per day';
INSERT INTO daily_sales SELECT d::date, round((random() * 1000)::numeric, 2)
  FROM generate_series(date '2025-01-01', date '2025-01-31', interval '1 day') AS d;
"#;

fn main() {
    eprintln!("Starting two throwaway PostgreSQL clusters...");
    let app = Cluster::start();
    app.exec("postgres", APP_FIXTURE);
    let analytics = Cluster::start();
    analytics.exec(
        "postgres",
        "CREATE ROLE mcp_analytics LOGIN NOINHERIT PASSWORD 'demo-analytics'",
    );
    // CREATE DATABASE cannot share a batch (it refuses transaction blocks).
    analytics.exec(
        "postgres",
        "CREATE DATABASE analytics_db OWNER mcp_analytics",
    );
    analytics.exec("analytics_db", ANALYTICS_TABLES);

    let module = |cluster: &Cluster, comment: &str, database: &str, user: &str, password: &str| {
        json!({
            "_comment": comment,
            "host": "127.0.0.1", "port": cluster.port, "database": database,
            "user": user, "password": password, "options": {"ssl": false},
            "pool": {"max": 10, "min": 0, "idleTimeoutMillis": 30000, "connectionTimeoutMillis": 5000}
        })
    };
    let config = json!({
        "delegation": {"modules": {
            "postgresql1": module(&app, "PRIMARY DATABASE - Main application database", "postgres", "mcp_service", "demo-service"),
            "postgresql2": module(&analytics, "SECONDARY DATABASE - Analytics/Reporting database", "analytics_db", "mcp_analytics", "demo-analytics")
        }},
        "mcp": {"enabledTools": {
            "sql1-delegate": true, "sql1-schema": true, "sql1-table-details": true,
            "sql2-delegate": true, "sql2-schema": true, "sql2-table-details": true,
            "health-check": true, "user-info": true
        }}
    });
    let config_path = paths::workspace_root().join("target/demo-config.json");
    std::fs::write(
        &config_path,
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )
    .expect("write demo config");

    let plugin_dir = paths::build_dir();
    let host = Host::start(&config, &plugin_dir);
    let url = host.mcp_url();
    let curl = |body: &str| {
        format!(
            "curl -s -X POST {url} -H 'Content-Type: application/json' \\\n  \
             -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' \\\n  \
             -d '{body}'"
        )
    };
    println!("\nmcp-delegate is serving at {url}");
    println!(
        "Config (yours to read and adapt): {}",
        config_path.display()
    );
    println!(
        "\nList the tools:\n{}",
        curl(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
    );
    println!(
        "\nCheck both databases:\n{}",
        curl(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"health-check","arguments":{}}}"#
        )
    );
    println!("\nPress Ctrl-C to stop and remove everything.");

    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .expect("install Ctrl-C handler");
    let _ = stop_rx.recv();
    eprintln!("\nStopping...");
    drop(host);
    drop(app);
    drop(analytics);
    let _ = std::fs::remove_file(config_path);
}
