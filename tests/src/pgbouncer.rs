//! A real PgBouncer (Debian's package, `/usr/sbin/pgbouncer`) in
//! transaction mode in front of a test cluster, on a free port: what an
//! operator puts between several replicas and PostgreSQL.

use std::path::PathBuf;
use std::process::Child;

use crate::pg::{
    command_as_postgres, free_port, give_to_postgres, spawn_listening, terminate, Cluster,
};

/// Where the Debian package puts the binary (`PGBOUNCER` overrides).
pub fn pgbouncer_binary() -> PathBuf {
    std::env::var_os("PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/pgbouncer"))
}

/// Settings of `deploy/pgbouncer/pgbouncer.ini` this machine replaces:
/// addresses, files, pool sizes.
pub const LOCAL_KEYS: &[&str] = &[
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "auth_file",
    "default_pool_size",
    "max_client_conn",
    "logfile",
    "pidfile",
];

/// The `[pgbouncer]` settings of `deploy/pgbouncer/pgbouncer.ini` but the
/// [`LOCAL_KEYS`], as lines: the tests run what operators are told to run.
pub fn deployed_settings() -> String {
    let path = crate::paths::workspace_root().join("deploy/pgbouncer/pgbouncer.ini");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut section = String::new();
    let mut lines = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section != "[pgbouncer]" || line.is_empty() || line.starts_with(';') {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default().trim();
        if !LOCAL_KEYS.contains(&key) {
            lines.push_str(line);
            lines.push('\n');
        }
    }
    assert!(lines.contains("pool_mode = transaction"), "{lines}");
    lines
}

/// A running PgBouncer; stopped when dropped.
pub struct PgBouncer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl PgBouncer {
    /// PgBouncer in front of `cluster`'s `postgres` database with the
    /// settings of `deploy/pgbouncer/pgbouncer.ini` (transaction mode), at
    /// most `server_pool` server connections, the service account
    /// (`mcp_service`, see [`crate::pgfixture::FIXTURE_SQL`]) the one user.
    pub fn start(cluster: &Cluster, server_pool: u32) -> Self {
        Self::start_as(cluster, server_pool, "mcp_service", "service-pass")
    }

    /// As [`PgBouncer::start`], for `user` with `password`.
    pub fn start_as(cluster: &Cluster, server_pool: u32, user: &str, password: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcpd-pgbouncer-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "[databases]\n\
             postgres = host=127.0.0.1 port={server} dbname=postgres\n\
             [pgbouncer]\n\
             {operator}\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_file = {users}\n\
             default_pool_size = {server_pool}\n\
             max_client_conn = 1000\n\
             logfile = {log}\n\
             pidfile = {pid}\n",
            server = cluster.port,
            operator = deployed_settings(),
            users = path("userlist.txt"),
            log = path("pgbouncer.log"),
            pid = path("pgbouncer.pid"),
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), config).expect("write pgbouncer.ini");
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{user}\" \"{password}\"\n"),
        )
        .expect("write userlist");
        // PgBouncer refuses to run as root.
        give_to_postgres(dir.path());
        let mut command = command_as_postgres(&pgbouncer_binary());
        command.arg(dir.path().join("pgbouncer.ini"));
        let log = dir.path().join("pgbouncer.log");
        let child = spawn_listening(command, port, "apt-get install pgbouncer", || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
        Self { port, dir, child }
    }

    /// The process PgBouncer runs in (under `runuser` when we are root:
    /// the tree's root).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// PgBouncer's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
