//! A throwaway cluster set up for delegation tests: a NOINHERIT service
//! account, delegated roles, a table under row-level security, and a host
//! with the real PostgreSQL plugin behind the test IdP.

use serde_json::{json, Value};

use crate::host::Host;
use crate::idp::TestIdp;
use crate::paths::{plugin_dir, plugin_library};
use crate::pg::{Cluster, PgVersion};
use crate::pgbouncer::PgBouncer;

/// The delegation fixture: a NOINHERIT service account that may switch to
/// every delegated role, among them `vault`, whose rows carry
/// [`crate::host::CANARY`] and which no test ever delegates to; a table
/// under row-level security; the extensions that run query text (dblink,
/// tablefunc, xml2) where the server has them.
pub const FIXTURE_SQL: &str = r#"
ALTER ROLE postgres PASSWORD 'superuser-pass';
CREATE ROLE mcp_service LOGIN NOINHERIT PASSWORD 'service-pass';
CREATE ROLE reader NOLOGIN;
CREATE ROLE writer NOLOGIN;
CREATE ROLE nobody NOLOGIN;
CREATE ROLE "DOMAIN\odd ""user""" NOLOGIN;
CREATE ROLE vault NOLOGIN;
GRANT reader, writer, nobody, "DOMAIN\odd ""user""", vault TO mcp_service;
CREATE TABLE notes (
    id serial PRIMARY KEY,
    owner text NOT NULL DEFAULT current_user,
    body text NOT NULL CHECK (length(body) < 1000),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notes IS 'Notes, one owner each';
COMMENT ON COLUMN notes.body IS 'The note text';
CREATE INDEX notes_owner_idx ON notes (owner);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON notes USING (owner = current_user) WITH CHECK (owner = current_user);
GRANT SELECT ON notes TO reader, "DOMAIN\odd ""user""";
GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO writer;
GRANT USAGE ON SEQUENCE notes_id_seq TO writer;
INSERT INTO notes (owner, body) VALUES
  ('reader', 'reader note 1'), ('reader', 'reader note 2'),
  ('writer', 'writer note'), ('nobody', 'nobody note'),
  ('DOMAIN\odd "user"', 'odd note'),
  ('vault', 'zq7-vault-canary note');
CREATE TABLE vault_data (id int PRIMARY KEY, secret text);
INSERT INTO vault_data VALUES (1, 'zq7-vault-canary data');
GRANT SELECT ON vault_data TO vault;
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'dblink') THEN CREATE EXTENSION dblink; END IF;
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'tablefunc') THEN CREATE EXTENSION tablefunc; END IF;
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'xml2') THEN CREATE EXTENSION xml2; END IF;
END $$;
CREATE TABLE secrets (id int PRIMARY KEY, value text);
INSERT INTO secrets VALUES (1, 'top secret');
CREATE VIEW reader_view WITH (security_invoker = true) AS SELECT id, body FROM notes;
COMMENT ON VIEW reader_view IS 'Notes without owners';
GRANT SELECT ON reader_view TO reader;
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE MATERIALIZED VIEW note_count AS SELECT count(*) AS n FROM notes;
GRANT SELECT ON note_count TO reader;
CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
GRANT SELECT ON events TO reader;
CREATE TABLE orders (id int PRIMARY KEY, note_id int REFERENCES notes(id), amount numeric(10,2));
GRANT SELECT ON orders TO reader;
INSERT INTO orders VALUES (1, 1, 10.50), (2, 2, 20.25), (3, 1, 5.00);
"#;

/// How the module reaches the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Its own connections to PostgreSQL.
    Direct,
    /// Through a real PgBouncer in transaction mode ([`PgBouncer`], with
    /// fewer server sessions than clients), with `pooler:
    /// "pgbouncer-transaction"`.
    PgBouncer,
}

/// Both routes, for tests that must hold either way.
pub const ROUTES: [Route; 2] = [Route::Direct, Route::PgBouncer];

/// Everything a delegation test needs.
pub struct Delegated {
    /// Stopped first (declared first): PgBouncer, when the route has one.
    pub bouncer: Option<PgBouncer>,
    pub cluster: Cluster,
    pub idp: TestIdp,
    pub host: Host,
    _plugins: tempfile::TempDir,
}

/// A module entry for `cluster` as the service account.
pub fn module_entry(cluster: &Cluster, extra: Value) -> Value {
    let mut entry = json!({
        "host": "127.0.0.1", "port": cluster.port, "database": "postgres",
        "user": "mcp_service", "password": "service-pass",
        "options": {"ssl": false},
        "pool": {"max": 4, "min": 0, "idleTimeoutMillis": 30000, "connectionTimeoutMillis": 3000}
    });
    if let (Some(entry), Value::Object(extra)) = (entry.as_object_mut(), extra) {
        entry.extend(extra);
    }
    entry
}

pub fn auth_section(idp: &TestIdp) -> Value {
    json!({"trustedIDPs": [{"name": "requestor-jwt", "issuer": idp.issuer,
        "audience": "mcp-oauth", "jwksUri": idp.jwks_uri()}]})
}

impl Delegated {
    /// One PostgreSQL 15 cluster with the fixture, one `postgresql1` module.
    pub fn start(module_extra: Value) -> Self {
        Self::start_on(PgVersion::V15, module_extra)
    }

    /// As [`Delegated::start`], on a cluster of `version`.
    pub fn start_on(version: PgVersion, module_extra: Value) -> Self {
        Self::start_full(version, module_extra, json!({}), &[])
    }

    /// As [`Delegated::start_on`], with top-level config sections
    /// (`config_extra`: `audit`, `mcp`, …) and command-line arguments.
    pub fn start_full(
        version: PgVersion,
        module_extra: Value,
        config_extra: Value,
        extra_args: &[&str],
    ) -> Self {
        Self::start_routed(
            version,
            Route::Direct,
            module_extra,
            config_extra,
            extra_args,
        )
    }

    /// As [`Delegated::start_on`], the module reaching the cluster by
    /// `route`.
    pub fn start_via(version: PgVersion, route: Route, module_extra: Value) -> Self {
        Self::start_routed(version, route, module_extra, json!({}), &[])
    }

    /// As [`Delegated::start_full`], by `route`.
    pub fn start_routed(
        version: PgVersion,
        route: Route,
        module_extra: Value,
        config_extra: Value,
        extra_args: &[&str],
    ) -> Self {
        let cluster = Cluster::start_version(version);
        cluster.exec("postgres", FIXTURE_SQL);
        let idp = TestIdp::start();
        let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
        // Two server sessions for the module's calls (one when its pool has
        // one connection), so that calls share server sessions.
        let server_pool = if module_extra["pool"]["max"] == 1 {
            1
        } else {
            2
        };
        let bouncer = (route == Route::PgBouncer).then(|| PgBouncer::start(&cluster, server_pool));
        let mut entry = module_entry(&cluster, json!({}));
        if let Some(bouncer) = &bouncer {
            entry["port"] = json!(bouncer.port);
            entry["pooler"] = json!("pgbouncer-transaction");
        }
        if let (Some(entry), Value::Object(extra)) = (entry.as_object_mut(), module_extra) {
            entry.extend(extra);
        }
        let mut config = json!({
            "auth": auth_section(&idp),
            "delegation": {"modules": {"postgresql1": entry}}
        });
        if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), config_extra) {
            config.extend(extra);
        }
        let host = Host::start_with(&config, plugins.path(), extra_args);
        Self {
            bouncer,
            cluster,
            idp,
            host,
            _plugins: plugins,
        }
    }

    /// A token for database identity `identity` with delegated roles.
    pub fn token(&self, identity: &str, roles: &[&str]) -> String {
        let mut all = vec!["user"];
        all.extend_from_slice(roles);
        self.idp.mint(
            identity,
            "mcp-oauth",
            json!({"legacy_name": identity, "roles": all}),
        )
    }

    /// `sql1-delegate` as `token`: the tool result.
    pub fn query_as(&mut self, token: &str, sql: &str, params: Value) -> Value {
        self.host.bearer = Some(token.to_owned());
        self.host.call_tool(
            "sql1-delegate",
            json!({"action": "query", "sql": sql, "params": params}),
        )
    }
}

/// Two clusters with the fixture behind one host: `postgresql1` (tools
/// `sql1-…`, with `first_extra` in its entry) and `postgresql2`, for
/// tests where one database fails and the other must not notice.
pub struct TwoDatabases {
    pub first: Cluster,
    pub second: Cluster,
    pub idp: TestIdp,
    pub host: Host,
    _plugins: tempfile::TempDir,
}

impl TwoDatabases {
    pub fn start(version: PgVersion, first_extra: Value) -> Self {
        let first = Cluster::start_version(version);
        let second = Cluster::start_version(version);
        for cluster in [&first, &second] {
            cluster.exec("postgres", FIXTURE_SQL);
        }
        let idp = TestIdp::start();
        let plugins = plugin_dir(&[plugin_library("mcp_delegate_postgresql")]);
        let config = json!({
            "auth": auth_section(&idp),
            "delegation": {"modules": {
                "postgresql1": module_entry(&first, first_extra),
                "postgresql2": module_entry(&second, json!({})),
            }}
        });
        let host = Host::start(&config, plugins.path());
        Self {
            first,
            second,
            idp,
            host,
            _plugins: plugins,
        }
    }
}

/// The rows of a successful result.
pub fn rows(result: &Value) -> Vec<Value> {
    assert_eq!(result["isError"], false, "expected success: {result}");
    result["structuredContent"]["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Turns functions `fn name(route: Route)` into two tests each,
/// `direct::name` and `through_pgbouncer::name`.
#[macro_export]
macro_rules! on_every_route {
    ($($name:ident),* $(,)?) => {
        mod direct {
            $(#[test]
            fn $name() {
                super::$name($crate::pgfixture::Route::Direct)
            })*
        }
        mod through_pgbouncer {
            $(#[test]
            fn $name() {
                super::$name($crate::pgfixture::Route::PgBouncer)
            })*
        }
    };
}
