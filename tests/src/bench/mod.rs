//! Pieces of the benchmark harness: a keep-alive HTTP load generator with
//! latency percentiles, pgbench runs, and process memory readings.

pub mod http1;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// "N cores (CPU model)" of this machine, for reports.
pub fn machine_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores ({model})")
}

/// One measured cell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measurement {
    pub calls_per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A request to send: URL, headers and body for call number `i`.
pub type RequestFor = Arc<dyn Fn(usize) -> (String, Vec<(String, String)>, String) + Send + Sync>;

/// Checks one response body; false counts as an error.
pub type Check = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Runs `clients` keep-alive clients for `duration` (after a short warm-up).
pub fn http_load(
    clients: usize,
    duration: Duration,
    request_for: RequestFor,
    check: Check,
) -> Measurement {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(300);
    let deadline = start + duration;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let request_for = request_for.clone();
            let check = check.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut clients: std::collections::HashMap<String, http1::Http1Client> =
                    std::collections::HashMap::new();
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (url, headers, body) = request_for(i);
                    let sent = Instant::now();
                    let ok = match http1::split_url(&url) {
                        Ok((authority, path)) => {
                            let client = clients.entry(authority.to_owned()).or_insert_with(|| {
                                http1::Http1Client::new(authority, Duration::from_secs(30))
                            });
                            match client.post(path, &headers, &body) {
                                Ok((200, text)) => check(&text),
                                _ => false,
                            }
                        }
                        Err(_) => false,
                    };
                    if sent >= start {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        if !ok {
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for thread in threads {
        let (latencies, thread_errors) = thread.join().expect("load thread");
        all.extend(latencies);
        errors += thread_errors;
    }
    all.sort_by(|a, b| a.total_cmp(b));
    Measurement {
        calls_per_second: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: percentile(&all, 0.50),
        p95_ms: percentile(&all, 0.95),
        p99_ms: percentile(&all, 0.99),
        errors,
    }
}

/// The password of every role the benchmarks log in as over TCP.
pub const BENCH_PASSWORD: &str = "bench";

/// pgbench with a custom script: transactions per second and latency
/// percentiles (from its per-transaction log).
pub fn pgbench(
    bin_dir: &Path,
    port: u16,
    user: &str,
    database: &str,
    script: &str,
    clients: usize,
    duration: Duration,
) -> Measurement {
    let dir = tempfile::tempdir().expect("temp dir");
    let script_path = dir.path().join("script.sql");
    std::fs::write(&script_path, script).expect("script");
    let out = Command::new(bin_dir.join("pgbench"))
        .current_dir(dir.path())
        .env("PGPASSWORD", BENCH_PASSWORD)
        .args(["-n", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(["-T", &duration.as_secs().to_string(), "-l", "-f"])
        .arg(&script_path)
        .arg(database)
        .output()
        .expect("run pgbench");
    if !out.status.success() {
        eprintln!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("log dir").flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("pgbench_log")
        {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            latencies.extend(
                log.lines()
                    .filter_map(|l| l.split_whitespace().nth(2))
                    .filter_map(|us| us.parse::<f64>().ok())
                    .map(|us| us / 1000.0),
            );
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Measurement {
        calls_per_second: tps,
        p50_ms: percentile(&latencies, 0.50),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        errors: usize::from(!out.status.success()),
    }
}

/// The number of threads of a process (0 when it is gone).
pub fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// (resident now, peak resident) of a process, in MiB.
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resident memory of a process and all its descendants (npm launchers
/// start the real server as a child), in MiB: (now, peak).
pub fn tree_memory_mib(pid: u32) -> (f64, f64) {
    let mut total = memory_mib(pid);
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
    {
        let (now, peak) = tree_memory_mib(child);
        total.0 += now;
        total.1 += peak;
    }
    total
}

/// CPU seconds (user + system) used so far by a process, its threads and
/// all its descendants, living or reaped (a parent that waited for a child
/// holds the child's time in its own counters).
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let ticks = clock_ticks_per_second();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime, stime, cutime, cstime are fields 14–17 (1-based), 11–14 here.
    let own: f64 = fields
        .iter()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum::<f64>()
        / ticks;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut children = 0.0;
    for task in tasks {
        let list = std::fs::read_to_string(format!(
            "/proc/{pid}/task/{}/children",
            task.to_string_lossy()
        ))
        .unwrap_or_default();
        for child in list
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            children += tree_cpu_seconds(child);
        }
    }
    own + children
}

/// The unit of /proc's CPU counters (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|&ticks| ticks > 0.0)
            .unwrap_or(100.0)
    })
}
