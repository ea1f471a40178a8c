//! A real PgBouncer (Debian's package, `/usr/sbin/pgbouncer`) in
//! transaction mode in front of a test cluster, on a free port: what an
//! operator puts between several replicas and PostgreSQL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pg::{free_port, is_root, Cluster};

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
        let mut command = if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(pgbouncer_binary());
            command
        } else {
            Command::new(pgbouncer_binary())
        };
        let child = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {} ({err}); install it: apt-get install pgbouncer",
                    pgbouncer_binary().display()
                )
            });
        let bouncer = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not start listening: {}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
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
        // runuser passes SIGTERM on to PgBouncer.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
