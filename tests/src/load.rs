//! Continuous load for the fault tests: several client threads, each
//! calling tools over real HTTP in a closed loop until stopped, every
//! call recorded with its start, duration and outcome. Every response is
//! checked for the canary ([`crate::host::canary_checked`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One tool call a load client sends.
#[derive(Debug, Clone)]
pub struct Call {
    pub tool: String,
    pub token: Option<String>,
    pub arguments: Value,
}

/// What a call came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A successful tool result: its `structuredContent`.
    Ok(Value),
    /// A tool error: its `{"error": CODE, …}` object.
    ToolError(Value),
    /// Anything else: an HTTP status other than 200, a JSON-RPC error, a
    /// cut connection.
    Failed(String),
}

impl Outcome {
    /// The error code of a tool error, `"HTTP"` for any other failure.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Ok(_) => None,
            Self::ToolError(error) => Some(error["error"].as_str().unwrap_or("?")),
            Self::Failed(_) => Some("HTTP"),
        }
    }
}

/// One call as it happened.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: usize,
    pub call: Call,
    pub start: Instant,
    pub elapsed: Duration,
    pub outcome: Outcome,
}

impl Record {
    pub fn end(&self) -> Instant {
        self.start + self.elapsed
    }
}

/// Sends one `tools/call` (legacy form) and reads its outcome.
pub fn call_once(client: &reqwest::blocking::Client, url: &str, call: &Call) -> Outcome {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": call.tool, "arguments": call.arguments}});
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    if let Some(token) = &call.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = match request.send() {
        Ok(response) => response,
        Err(err) => return Outcome::Failed(format!("request failed: {err}")),
    };
    let status = response.status().as_u16();
    let text = match response.text() {
        Ok(text) => crate::host::canary_checked(text),
        Err(err) => return Outcome::Failed(format!("HTTP {status}, body cut: {err}")),
    };
    if status != 200 {
        return Outcome::Failed(format!("HTTP {status}: {text}"));
    }
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        return Outcome::Failed(format!("not JSON: {text}"));
    };
    let result = &value["result"];
    if result["isError"] == false {
        Outcome::Ok(result["structuredContent"].clone())
    } else if result["isError"] == true {
        let error = result["content"][0]["text"]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        Outcome::ToolError(error)
    } else {
        Outcome::Failed(format!("not a tool result: {text}"))
    }
}

/// Client threads calling until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Record>>>,
}

impl Load {
    /// `clients` threads against `url`; client `i` sends `next(i, n)` as
    /// its `n`-th call and pauses `pause` between calls.
    pub fn start(
        url: &str,
        clients: usize,
        pause: Duration,
        next: impl Fn(usize, u64) -> Call + Send + Sync + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(next);
        let threads = (0..clients)
            .map(|index| {
                let (stop, next, url) = (stop.clone(), next.clone(), url.to_owned());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .build()
                        .expect("HTTP client");
                    let mut records = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let call = next(index, n);
                        let start = Instant::now();
                        let outcome = call_once(&client, &url, &call);
                        records.push(Record {
                            client: index,
                            call,
                            start,
                            elapsed: start.elapsed(),
                            outcome,
                        });
                        n += 1;
                        std::thread::sleep(pause);
                    }
                    records
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the clients (each finishes its call in flight): every call.
    pub fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        let mut records: Vec<Record> = self
            .threads
            .into_iter()
            .flat_map(|thread| thread.join().expect("load client"))
            .collect();
        records.sort_by_key(|record| record.start);
        records
    }
}

/// The `q`-quantile (0..=1) of `durations` (nearest rank).
pub fn quantile(durations: &[Duration], q: f64) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = durations.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The 99th percentile of the calls' durations.
pub fn p99(records: &[&Record]) -> Duration {
    let durations: Vec<Duration> = records.iter().map(|record| record.elapsed).collect();
    quantile(&durations, 0.99)
}

/// A count of each outcome code (`ok` for successes), for messages.
pub fn summary(records: &[&Record]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for record in records {
        *counts
            .entry(record.outcome.code().unwrap_or("ok").to_owned())
            .or_insert(0) += 1;
    }
    counts
}
