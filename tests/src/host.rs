//! The real `mcp-delegate` binary as a child process, and a small JSON-RPC
//! client for it over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::paths;

/// Text that only rows no test identity may read contain (the `vault`
/// role's rows in `pgfixture::FIXTURE_SQL`). Every response any test
/// receives through this client is checked for it: a response or error
/// that carries it means delegation leaked another role's data.
pub const CANARY: &str = "zq7-vault-canary";

/// Panics when `body` carries [`CANARY`].
pub fn canary_checked(body: String) -> String {
    assert!(
        !body.contains(CANARY),
        "a response carried another role's rows (the canary): {}",
        &body[..body.len().min(2000)]
    );
    body
}

pub struct Host {
    child: Child,
    pub base_url: String,
    logs: Arc<Mutex<Vec<String>>>,
    config: tempfile::NamedTempFile,
    client: reqwest::blocking::Client,
    next_id: u64,
    /// Sent as `Authorization: Bearer …` on MCP requests when set.
    pub bearer: Option<String>,
}

/// Writes `config` to a temp file.
pub fn config_file(config: &Value) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("config file");
    std::fs::write(file.path(), config.to_string()).expect("write config");
    file
}

/// Replaces `path` with `contents` by atomic rename, as operators (and
/// Kubernetes) do: readers see the old file or the new, never a half.
pub fn replace_file(path: &Path, contents: &[u8]) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, contents).expect("write staged file");
    std::fs::rename(&staged, path).expect("rename staged file");
}

/// Runs `mcp-delegate` with `args` to completion: (exit code, stdout, stderr).
pub fn run_to_exit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(paths::host_binary())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run host");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mcp-delegate check-config` on `config` (written to a temp file) with
/// plugins from `plugin_dir`: (exit code, stdout).
pub fn check_config(config: &Value, plugin_dir: &Path, extra_args: &[&str]) -> (i32, String) {
    let file = config_file(config);
    let mut args = vec![
        "check-config",
        file.path().to_str().expect("utf-8 path"),
        "--plugin-dir",
        plugin_dir.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra_args);
    let (code, stdout, _) = run_to_exit(&args);
    (code, stdout)
}

/// Serves `config` (written to a temp file) with plugins from `plugin_dir`
/// until the host exits on its own: for startup failures.
pub fn serve_to_exit(
    config: &Value,
    plugin_dir: &Path,
    extra_args: &[&str],
) -> (i32, String, String) {
    let file = config_file(config);
    let config_path = file.path().to_str().expect("utf-8 path").to_owned();
    let plugin_path = plugin_dir.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "--config",
        &config_path,
        "--plugin-dir",
        &plugin_path,
        "--port",
        "0",
    ];
    args.extend_from_slice(extra_args);
    run_to_exit(&args)
}

impl Host {
    /// Starts the host on a free port; returns once it listens.
    pub fn start(config: &Value, plugin_dir: &Path) -> Self {
        Self::start_with(config, plugin_dir, &[])
    }

    /// Tests that are not about authentication run with `auth.mode: "none"`
    /// unless their config says otherwise.
    pub fn start_with(config: &Value, plugin_dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_logging(config, plugin_dir, extra_args, "info")
    }

    /// As [`Host::start_with`], with a `RUST_LOG` filter (the fixture needs
    /// the startup line of `mcp_delegate::serve` at info).
    pub fn start_logging(
        config: &Value,
        plugin_dir: &Path,
        extra_args: &[&str],
        filter: &str,
    ) -> Self {
        Self::start_full(config, plugin_dir, extra_args, filter, &[])
    }

    /// As [`Host::start_with`], with environment variables for the host.
    pub fn start_with_env(
        config: &Value,
        plugin_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_full(config, plugin_dir, extra_args, "info", env)
    }

    /// As [`Host::start`], on `port` (a replica restarted where its load
    /// balancer expects it).
    pub fn start_on_port(config: &Value, plugin_dir: &Path, port: u16) -> Self {
        let port = port.to_string();
        Self::start_full(config, plugin_dir, &["--port", &port], "info", &[])
    }

    /// The port the host listens on.
    pub fn port(&self) -> u16 {
        self.base_url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or(0)
    }

    fn start_full(
        config: &Value,
        plugin_dir: &Path,
        extra_args: &[&str],
        filter: &str,
        env: &[(&str, &str)],
    ) -> Self {
        // `--port 0` unless the arguments name a port.
        let port = if extra_args.contains(&"--port") {
            None
        } else {
            Some("0")
        };
        let mut config = config.clone();
        if config.get("auth").is_none() {
            config["auth"] = json!({"mode": "none"});
        }
        // The suite-wide audit sweep (see `audit_sweep`).
        if let (None, Some(file)) = (config.get("audit"), crate::audit_sweep::audit_file()) {
            config["audit"] = json!({"sink": file});
        }
        let config_file = config_file(&config);
        let mut child = Command::new(paths::host_binary())
            .arg("--config")
            .arg(config_file.path())
            .arg("--plugin-dir")
            .arg(plugin_dir)
            .args(port.map(|port| ["--port", port]).into_iter().flatten())
            .args(extra_args)
            .envs(env.iter().copied())
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn host");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(start) = line.find("Listening on http://") {
                    let url = line[start + "Listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches("/mcp")
                        .to_owned();
                    let _ = ready_tx.send(url);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let base_url = match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "host did not start listening; its log:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        Self {
            child,
            base_url,
            logs,
            config: config_file,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            next_id: 1,
            bearer: None,
        }
    }

    /// The config file the host serves: rewrite it (atomically, see
    /// [`replace_file`]) to reload.
    pub fn config_path(&self) -> &Path {
        self.config.path()
    }

    /// Sends `SIGTERM` and waits (up to `within`) for the host to exit:
    /// its exit code, or `None` if it did not exit in time.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Some(exit.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `SIGHUP` (reload).
    pub fn hang_up(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base_url)
    }

    /// A line of the host process's /proc status, in KiB (`VmRSS`: now,
    /// `VmHWM`: the peak so far).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("host /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().iter().any(|line| line.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// POSTs a raw body to /mcp (legacy protocol headers): (status, body).
    pub fn post_raw(&self, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        let (status, _, body) = self.post_with_token(self.bearer.as_deref(), body);
        (status, body)
    }

    /// POSTs with a given bearer token (or none): (status, WWW-Authenticate, body).
    pub fn post_with_token(
        &self,
        token: Option<&str>,
        body: impl Into<reqwest::blocking::Body>,
    ) -> (u16, String, String) {
        let body: reqwest::blocking::Body = body.into();
        if let Some(bytes) = body.as_bytes() {
            crate::audit_sweep::record_request(bytes);
        }
        let mut request = self
            .client
            .post(self.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().expect("POST /mcp");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            status,
            challenge,
            canary_checked(response.text().unwrap_or_default()),
        )
    }

    /// POSTs a `tools/call` in the 2026-07-28 form (`_meta` with the
    /// protocol version and capabilities, `Mcp-Method`/`Mcp-Name` headers),
    /// with `extra_meta` merged into `_meta`: (status, body).
    pub fn post_modern_call(&self, id: Value, params: &Value, extra_meta: Value) -> (u16, String) {
        let mut params = params.clone();
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        });
        if let (Some(meta), Value::Object(extra)) = (params["_meta"].as_object_mut(), extra_meta) {
            meta.extend(extra);
        }
        let name = params["name"].as_str().unwrap_or_default().to_owned();
        crate::audit_sweep::record_request(json!({"params": params}).to_string().as_bytes());
        let mut request = self
            .client
            .post(self.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", name)
            .body(
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
                    .to_string(),
            );
        if let Some(token) = &self.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().expect("POST /mcp");
        let status = response.status().as_u16();
        (status, canary_checked(response.text().unwrap_or_default()))
    }

    /// One JSON-RPC request; returns the whole response object.
    pub fn rpc(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, body) = self.post_raw(request.to_string());
        assert_eq!(status, 200, "{method} answered HTTP {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
    }

    /// Names from `tools/list`, following pagination.
    pub fn tool_names(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let response = self.rpc("tools/list", params);
            let result = &response["result"];
            for tool in result["tools"].as_array().expect("tools array") {
                names.push(tool["name"].as_str().expect("name").to_owned());
            }
            match result["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return names,
            }
        }
    }

    /// `tools/call`; returns the JSON-RPC `result` (or panics on an `error`).
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        let response = self.rpc("tools/call", json!({"name": name, "arguments": arguments}));
        assert!(
            response.get("error").is_none(),
            "tools/call {name}: {response}"
        );
        response["result"].clone()
    }

    /// The `{"error": CODE, ...}` object of a failed tool result.
    pub fn tool_error(result: &Value) -> Value {
        assert_eq!(result["isError"], true, "expected a tool error: {result}");
        assert!(result.get("structuredContent").is_none(), "{result}");
        let text = result["content"][0]["text"].as_str().expect("text content");
        serde_json::from_str(text).expect("error JSON")
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
