//! Throwaway PostgreSQL clusters: initdb + pg_ctl into a temp dir, on a free
//! loopback port, removed on drop. As root, the server runs as `postgres`
//! (initdb refuses root).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// PostgreSQL server binaries (`PG_BIN` overrides).
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn run_pg(binary: &str, args: &[&str]) -> Output {
    let program = pg_bin_dir().join(binary);
    let output = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&program)
            .args(args)
            .output()
    } else {
        Command::new(&program).args(args).output()
    };
    output.unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// The superuser created by initdb.
pub const SUPERUSER: &str = "postgres";

pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Cluster {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcpd-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let out = run_pg(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self {
            port: free_port(),
            dir,
        };
        cluster.pg_ctl_start();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=60",
            self.port,
            self.socket_dir().display()
        );
        let log = self.dir.path().join("server.log");
        let out = run_pg(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn stop(&self) {
        let out = run_pg(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().expect("utf-8"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// A superuser connection string (for fixtures, never for the host).
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={database}",
            self.port
        )
    }

    /// Runs SQL (several statements allowed) as the superuser.
    pub fn exec(&self, database: &str, sql: &str) {
        let mut client = postgres::Client::connect(&self.admin_url(database), postgres::NoTls)
            .expect("superuser connection");
        client.batch_execute(sql).expect("fixture SQL");
    }

    /// First column of every row of `sql`, as text.
    pub fn query_texts(&self, database: &str, sql: &str) -> Vec<String> {
        let mut client = postgres::Client::connect(&self.admin_url(database), postgres::NoTls)
            .expect("superuser connection");
        client
            .query(sql, &[])
            .expect("fixture query")
            .iter()
            .map(|row| row.get::<_, Option<String>>(0).unwrap_or_default())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = run_pg(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}
