//! `mcp-delegate-demo`: the whole thing on one machine. Two throwaway
//! PostgreSQL clusters with sample data and row-level security, the test
//! identity provider (JWKS + token exchange) on loopback, and mcp-delegate
//! in front of them in the seed's dual-database shape. Prints the MCP URL,
//! a bearer token per demo user and curl examples. Ctrl-C stops everything
//! and removes the temporary data.

use std::sync::mpsc;
use std::time::Duration;

use mcp_delegate_tests::host::Host;
use mcp_delegate_tests::idp::{TestIdp, CLIENT_ID, CLIENT_SECRET};
use mcp_delegate_tests::paths;
use mcp_delegate_tests::pg::Cluster;
use serde_json::{json, Value};

/// Demo users: (login and database role, what they may do, requestor role,
/// delegated SQL roles).
const USERS: &[(&str, &str, &str, &[&str])] = &[
    ("alice", "read-only", "user", &["sql-read"]),
    ("bob", "writer", "user", &["sql-read", "sql-write"]),
    ("carol", "admin", "admin", &["admin"]),
];

const TOKEN_HOURS: u64 = 8;

const ROLES_SQL: &str = r#"
CREATE ROLE mcp_service LOGIN NOINHERIT PASSWORD 'demo-service-password';
CREATE ROLE alice NOLOGIN;
CREATE ROLE bob NOLOGIN;
CREATE ROLE carol NOLOGIN;
GRANT alice, bob, carol TO mcp_service;
"#;

const APP_SQL: &str = r#"
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    account_manager text NOT NULL
);
COMMENT ON TABLE customers IS 'Customers; each sales person sees the ones they manage';
COMMENT ON COLUMN customers.account_manager IS 'Database role of the responsible sales person';
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers(id),
    total numeric(10, 2) NOT NULL CHECK (total >= 0),
    placed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE orders IS 'Orders placed by customers';
CREATE INDEX orders_customer_idx ON orders (customer_id);
INSERT INTO customers (name, email, account_manager) VALUES
  ('Acme Corp', 'buyer@acme.example', 'alice'),
  ('Globex', 'orders@globex.example', 'alice'),
  ('Initech', 'it@initech.example', 'bob'),
  ('Umbrella', 'supply@umbrella.example', 'carol');
INSERT INTO orders (customer_id, total) VALUES (1, 120.00), (1, 75.50), (2, 980.00), (3, 42.00), (4, 7.25);
ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY managed_by_me ON customers USING (account_manager = current_user OR current_user = 'carol');
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_of_my_customers ON orders
  USING (EXISTS (SELECT 1 FROM customers c WHERE c.id = customer_id));
GRANT SELECT ON customers, orders TO alice, bob, carol;
GRANT INSERT, UPDATE ON orders TO bob, carol;
GRANT USAGE ON SEQUENCE orders_id_seq TO bob, carol;
GRANT ALL ON ALL TABLES IN SCHEMA public TO carol;
"#;

const ANALYTICS_SQL: &str = r#"
CREATE TABLE regions (code text PRIMARY KEY, name text NOT NULL);
COMMENT ON TABLE regions IS 'Sales regions';
CREATE TABLE daily_sales (
    date date NOT NULL,
    region text NOT NULL REFERENCES regions(code),
    total_revenue numeric(12, 2) NOT NULL,
    PRIMARY KEY (date, region)
);
COMMENT ON TABLE daily_sales IS 'Revenue per day and region';
INSERT INTO regions VALUES ('eu', 'Europe'), ('us', 'Americas');
INSERT INTO daily_sales
  SELECT d::date, r, round((100 + 900 * abs(sin(extract(doy FROM d) * length(r))))::numeric, 2)
  FROM generate_series(date '2025-01-01', date '2025-03-31', interval '1 day') AS d, unnest(ARRAY['eu', 'us']) AS r;
GRANT SELECT ON regions, daily_sales TO alice, bob, carol;
"#;

fn module(
    cluster: &Cluster,
    comment: &str,
    database: &str,
    audience: &str,
    idp: &TestIdp,
) -> Value {
    json!({
        "_comment": comment,
        "host": "127.0.0.1", "port": cluster.port, "database": database,
        "user": "mcp_service", "password": "demo-service-password",
        "options": {"ssl": false},
        "pool": {"max": 10, "min": 0, "idleTimeoutMillis": 30000, "connectionTimeoutMillis": 5000},
        "tokenExchange": {
            "idpName": "sql-delegation-te-jwt",
            "tokenEndpoint": idp.token_endpoint(),
            "clientId": CLIENT_ID,
            "clientSecret": CLIENT_SECRET,
            "audience": audience,
            "requiredClaim": "legacy_name",
            "cache": {"enabled": true, "ttlSeconds": 60}
        }
    })
}

fn main() {
    eprintln!("Starting two throwaway PostgreSQL clusters and the identity provider...");
    let app = Cluster::start();
    app.exec("postgres", ROLES_SQL);
    app.exec("postgres", "CREATE DATABASE app");
    app.exec("app", APP_SQL);
    let analytics = Cluster::start();
    analytics.exec("postgres", ROLES_SQL);
    analytics.exec("postgres", "CREATE DATABASE analytics_db");
    analytics.exec("analytics_db", ANALYTICS_SQL);

    let idp = TestIdp::start();
    for (user, _, _, sql_roles) in USERS {
        idp.add_user(user, user, sql_roles);
    }
    let config = json!({
        "auth": {"trustedIDPs": [
            {"name": "requestor-jwt", "issuer": idp.issuer, "audience": "mcp-oauth",
             "jwksUri": idp.jwks_uri(), "algorithms": ["RS256", "ES256"],
             "roleMappings": {"admin": ["admin"], "user": ["user"], "guest": ["guest"]}},
            {"name": "sql-delegation-te-jwt", "issuer": idp.issuer, "audience": "mcp-server-client",
             "jwksUri": idp.jwks_uri(), "algorithms": ["RS256", "ES256"]}
        ]},
        "delegation": {"modules": {
            "postgresql1": module(&app, "PRIMARY DATABASE - Main application database", "app", "mcp-server-client", &idp),
            "postgresql2": module(&analytics, "SECONDARY DATABASE - Analytics/Reporting database", "analytics_db", "mcp-server-client", &idp)
        }},
        "mcp": {"enabledTools": {
            "sql1-delegate": true, "sql1-schema": true, "sql1-table-details": true,
            "sql2-delegate": true, "sql2-schema": true, "sql2-table-details": true,
            "health-check": true, "user-info": true
        }}
    });
    let demo_dir = paths::workspace_root().join("target/demo");
    let _ = std::fs::create_dir_all(&demo_dir);
    let config_path = demo_dir.join("mcp-delegate.json");
    if let Ok(text) = serde_json::to_string_pretty(&config) {
        let _ = std::fs::write(&config_path, text);
    }

    let host = Host::start(&config, &paths::build_dir());
    let url = host.mcp_url();
    let now = mcp_delegate_tests::idp::now();
    println!("\nmcp-delegate is serving at {url}");
    println!(
        "Its config (yours to read and adapt): {}\n",
        config_path.display()
    );
    println!("Bearer tokens, valid for {TOKEN_HOURS} hours:");
    for (user, what, role, _) in USERS {
        let token = idp.mint(
            user,
            "mcp-oauth",
            json!({"roles": [role], "exp": now + TOKEN_HOURS * 3600, "preferred_username": user}),
        );
        println!(
            "export TOKEN_{}={token}   # {user}: {what}",
            user.to_uppercase()
        );
    }
    let curl = |token: &str, body: &str| {
        format!(
            "curl -s -X POST {url} -H \"Authorization: Bearer ${token}\" -H 'Content-Type: application/json' \\\n  \
             -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' \\\n  \
             -d '{body}'"
        )
    };
    println!(
        "\nList the tools:\n{}",
        curl(
            "TOKEN_ALICE",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        )
    );
    println!(
        "\nQuery the primary database as alice (row-level security shows only her customers):\n{}",
        curl(
            "TOKEN_ALICE",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sql1-delegate","arguments":{"action":"query","sql":"SELECT c.name, sum(o.total) AS revenue FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.total > $1 GROUP BY c.name","params":[10]}}}"#
        )
    );
    println!(
        "\nDescribe a table of the analytics database:\n{}",
        curl(
            "TOKEN_BOB",
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sql2-table-details","arguments":{"tableName":"daily_sales","schemaName":"public"}}}"#
        )
    );
    println!("\nPress Ctrl-C to stop and remove everything.");

    let (stop_tx, stop_rx) = mpsc::channel();
    if ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .is_err()
    {
        eprintln!("cannot install a Ctrl-C handler; stopping now");
    } else {
        let _ = stop_rx.recv();
    }
    eprintln!("\nStopping...");
    drop(host);
    drop(idp);
    drop(app);
    drop(analytics);
    let _ = std::fs::remove_dir_all(&demo_dir);
    std::thread::sleep(Duration::from_millis(100));
}
