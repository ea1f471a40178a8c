//! A real nginx (Debian's package, `/usr/sbin/nginx`) in front of several
//! host replicas: round-robin, keep-alive connections to the upstreams, an
//! access log naming the replica that served each request.

use std::path::PathBuf;
use std::process::Child;

use crate::pg::{command_as_postgres, free_port, give_to_postgres, spawn_listening, terminate};

/// Where the Debian package puts the binary (`NGINX` overrides).
pub fn nginx_binary() -> PathBuf {
    std::env::var_os("NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// The load balancer's settings, as `docs/operations.md` recommends them.
/// A replica that refuses connections (stopped) is skipped and the request
/// passed to the next one (nginx retries a POST only when it was not sent);
/// `max_fails`/`fail_timeout` keep it out for a while.
const PROXY: &str = "\
        proxy_pass http://mcp_replicas;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_buffering off;
        proxy_read_timeout 130s;
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries 3;";

/// A running nginx; stopped when dropped.
pub struct Nginx {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// nginx on a free port in front of the replicas listening on
    /// `upstreams` (ports on 127.0.0.1).
    pub fn start(upstreams: &[u16]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mcpd-nginx-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let servers: String = upstreams
            .iter()
            .map(|port| format!("        server 127.0.0.1:{port} max_fails=1 fail_timeout=1s;\n"))
            .collect();
        let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|kind| format!("    {kind}_temp_path {};\n", path(kind)))
            .collect::<String>();
        let config = format!(
            "worker_processes 1;\n\
             daemon off;\n\
             pid {pid};\n\
             error_log {error} warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             {temp}\
                 log_format replicas '$msec $upstream_addr $status';\n\
                 access_log {access} replicas;\n\
                 upstream mcp_replicas {{\n\
             {servers}\
                     keepalive 32;\n\
                 }}\n\
                 server {{\n\
                     listen 127.0.0.1:{port};\n\
                     location / {{\n\
             {PROXY}\n\
                     }}\n\
                 }}\n\
             }}\n",
            pid = path("nginx.pid"),
            error = path("error.log"),
            access = path("access.log"),
        );
        std::fs::write(dir.path().join("nginx.conf"), config).expect("write nginx.conf");
        // As root, nginx would switch its workers to `nobody`, who cannot
        // reach the private temp dir: run it as `postgres` (the clusters'
        // user) instead.
        give_to_postgres(dir.path());
        let mut command = command_as_postgres(&nginx_binary());
        command
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"));
        let error_log = dir.path().join("error.log");
        let child = spawn_listening(command, port, "apt-get install nginx", || {
            std::fs::read_to_string(&error_log).unwrap_or_default()
        });
        Self { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// `(unix time in seconds, upstream address(es), status)` per request.
    pub fn access_log(&self) -> Vec<(f64, String, u16)> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let at = fields.next()?.parse().ok()?;
                let status = fields.next_back()?.parse().ok()?;
                Some((at, fields.collect::<Vec<_>>().join(" "), status))
            })
            .collect()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown.
        terminate(&mut self.child);
    }
}
