//! Prometheus metrics, exposed on their own listener (`--metrics-bind`),
//! never on the public MCP port. The `prometheus` crate keeps the values
//! and writes the text exposition.
//!
//! Label values come from the config (module and tool names), from fixed
//! sets (outcomes, reasons, SQLSTATE classes), or are replaced: a tool
//! name a client invents is counted as `unknown`, so no caller can grow
//! the series.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mcp_delegate_plugin_api::{codes, CallFacts};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::http::HttpResponse;

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    tool_calls: IntCounterVec,
    tool_seconds: HistogramVec,
    tool_errors: IntCounterVec,
    module_up: IntGaugeVec,
    auth_outcomes: IntCounterVec,
    cache_events: IntCounterVec,
    cache_entries: IntGaugeVec,
    exchanges: IntCounterVec,
    exchange_seconds: HistogramVec,
    pool_connections: IntGaugeVec,
    pool_wait_seconds: HistogramVec,
    pool_timeouts: IntCounterVec,
    sql_refusals: IntCounterVec,
    database_errors: IntCounterVec,
    statement_timeouts: IntCounterVec,
    plugin_panics: IntCounterVec,
    reloads: IntCounterVec,
    config_generation: IntGaugeVec,
    audit_failures: IntCounter,
    build_info: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|err| unreachable_metric(name, &err));
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|err| unreachable_metric(name, &err));
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|err| unreachable_metric(name, &err));
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

/// The definitions above are constants: a failure is a programming error
/// caught by the first test run.
#[allow(clippy::panic)]
fn unreachable_metric(name: &str, err: &prometheus::Error) -> ! {
    panic!("metric {name} is ill-defined: {err}")
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Whether metrics are served (`--metrics-bind`): calls then ask their
/// module for facts (pool state, refusal reasons) even without an audit
/// log. Without it, the per-request recorders return at once: nobody
/// would read what they count.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let metrics = Self {
            http_requests: counter(
                r,
                "mcpd_http_requests_total",
                "HTTP requests answered, by status class (2xx, 4xx, 5xx).",
                &["class"],
            ),
            tool_calls: counter(
                r,
                "mcpd_tool_calls_total",
                "Tool calls by module, tool and outcome (ok, error, unknown-tool).",
                &["module", "tool", "outcome"],
            ),
            tool_seconds: histogram(
                r,
                "mcpd_tool_call_duration_seconds",
                "Tool call latency in the host, by module and tool.",
                &["module", "tool"],
                LATENCY_BUCKETS,
            ),
            tool_errors: counter(
                r,
                "mcpd_tool_errors_total",
                "Failed tool calls by module and stable error code.",
                &["module", "code"],
            ),
            module_up: gauge(
                r,
                "mcpd_module_up",
                "1 for each configured module with a running instance, 0 for one that is unavailable.",
                &["module"],
            ),
            auth_outcomes: counter(
                r,
                "mcpd_auth_total",
                "Bearer token checks by outcome (ok, or the OAuth error: invalid_token, insufficient_scope, ...).",
                &["outcome"],
            ),
            cache_events: counter(
                r,
                "mcpd_cache_events_total",
                "Token cache lookups and evictions, by cache (verified, exchanged) and event (hit, miss, eviction).",
                &["cache", "event"],
            ),
            cache_entries: gauge(
                r,
                "mcpd_cache_entries",
                "Entries in each token cache.",
                &["cache"],
            ),
            exchanges: counter(
                r,
                "mcpd_token_exchanges_total",
                "RFC 8693 token exchanges by module and outcome (ok, or the error code).",
                &["module", "outcome"],
            ),
            exchange_seconds: histogram(
                r,
                "mcpd_token_exchange_duration_seconds",
                "Token exchange latency by module.",
                &["module"],
                LATENCY_BUCKETS,
            ),
            pool_connections: gauge(
                r,
                "mcpd_pool_connections",
                "Database pool connections by module and state (max, open, idle, in_use), as of the last call.",
                &["module", "state"],
            ),
            pool_wait_seconds: histogram(
                r,
                "mcpd_pool_wait_seconds",
                "Time calls waited for a pooled connection, by module.",
                &["module"],
                LATENCY_BUCKETS,
            ),
            pool_timeouts: counter(
                r,
                "mcpd_pool_timeouts_total",
                "Calls refused because no pooled connection became free (POOL_EXHAUSTED), by module.",
                &["module"],
            ),
            sql_refusals: counter(
                r,
                "mcpd_sql_refusals_total",
                "Statements the SQL policy refused, by module and reason category.",
                &["module", "reason"],
            ),
            database_errors: counter(
                r,
                "mcpd_database_errors_total",
                "Database errors by module and SQLSTATE class (its first two characters).",
                &["module", "class"],
            ),
            statement_timeouts: counter(
                r,
                "mcpd_statement_timeouts_total",
                "Statements cancelled by the statement timeout, by module.",
                &["module"],
            ),
            plugin_panics: counter(
                r,
                "mcpd_plugin_panics_total",
                "Tool calls that ended in a plugin panic, by module.",
                &["module"],
            ),
            reloads: counter(
                r,
                "mcpd_reloads_total",
                "Configuration reloads by result (ok, refused).",
                &["result"],
            ),
            config_generation: gauge(
                r,
                "mcpd_config_generation_info",
                "The configuration generation serving (1), by the config file hash shown in /ready.",
                &["generation"],
            ),
            audit_failures: {
                let metric = IntCounter::new(
                    "mcpd_audit_write_failures_total",
                    "Audit lines that could not be written.",
                )
                .unwrap_or_else(|err| unreachable_metric("mcpd_audit_write_failures_total", &err));
                let _ = r.register(Box::new(metric.clone()));
                metric
            },
            build_info: gauge(
                r,
                "mcpd_build_info",
                "This build (1), by version.",
                &["version"],
            ),
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }

    pub fn http_response(&self, status: u16) {
        if !enabled() {
            return;
        }
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.with_label_values(&[class]).inc();
    }

    pub fn auth(&self, outcome: &str) {
        if !enabled() {
            return;
        }
        let outcome = fixed_label(outcome);
        self.auth_outcomes.with_label_values(&[outcome]).inc();
    }

    pub fn cache_event(&self, cache: &'static str, event: &'static str) {
        if !enabled() {
            return;
        }
        self.cache_events.with_label_values(&[cache, event]).inc();
    }

    pub fn cache_size(&self, cache: &'static str, entries: usize) {
        if !enabled() {
            return;
        }
        self.cache_entries
            .with_label_values(&[cache])
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    pub fn exchange(&self, module: &str, outcome: &str, took: Duration) {
        if !enabled() {
            return;
        }
        self.exchanges
            .with_label_values(&[module, fixed_label(outcome)])
            .inc();
        self.exchange_seconds
            .with_label_values(&[module])
            .observe(took.as_secs_f64());
    }

    /// A tool that is not in the tool table (the name is the client's).
    pub fn unknown_tool(&self) {
        if !enabled() {
            return;
        }
        self.tool_calls
            .with_label_values(&["", "unknown", "unknown-tool"])
            .inc();
    }

    /// One completed call of a known tool (`module`: empty for built-ins).
    pub fn tool_call(
        &self,
        module: &str,
        tool: &str,
        error_code: Option<&str>,
        sqlstate: Option<&str>,
        facts: Option<&CallFacts>,
        took: Duration,
    ) {
        if !enabled() {
            return;
        }
        let outcome = if error_code.is_some() { "error" } else { "ok" };
        self.tool_calls
            .with_label_values(&[module, tool, outcome])
            .inc();
        self.tool_seconds
            .with_label_values(&[module, tool])
            .observe(took.as_secs_f64());
        if let Some(code) = error_code {
            self.tool_errors
                .with_label_values(&[module, fixed_label(code)])
                .inc();
        }
        match error_code {
            Some(codes::POOL_EXHAUSTED) => self.pool_timeouts.with_label_values(&[module]).inc(),
            Some(codes::STATEMENT_TIMEOUT) => {
                self.statement_timeouts.with_label_values(&[module]).inc();
            }
            Some(codes::PLUGIN_PANIC) => self.plugin_panics.with_label_values(&[module]).inc(),
            _ => {}
        }
        if let Some(class) = sqlstate.and_then(|state| state.get(..2)) {
            if class.bytes().all(|b| b.is_ascii_alphanumeric()) {
                self.database_errors
                    .with_label_values(&[module, class])
                    .inc();
            }
        }
        let Some(facts) = facts else {
            return;
        };
        if let Some(reason) = &facts.refusal_reason {
            self.sql_refusals
                .with_label_values(&[module, fixed_label(reason)])
                .inc();
        }
        if let Some(pool) = facts.pool {
            let set = |state: &str, value: u32| {
                self.pool_connections
                    .with_label_values(&[module, state])
                    .set(i64::from(value));
            };
            set("max", pool.max);
            set("open", pool.open);
            set("idle", pool.idle);
            set("in_use", pool.open.saturating_sub(pool.idle));
            self.pool_wait_seconds
                .with_label_values(&[module])
                .observe(Duration::from_micros(pool.wait_micros).as_secs_f64());
        }
    }

    /// The modules of the generation now serving.
    pub fn modules(&self, modules: &crate::plugins::ModuleSet) {
        self.module_up.reset();
        for module in &modules.running {
            self.module_up.with_label_values(&[&module.name]).set(1);
        }
        for module in &modules.unavailable {
            self.module_up.with_label_values(&[&module.name]).set(0);
        }
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "refused" }])
            .inc();
    }

    /// The generation now serving: the only series of the gauge set to 1.
    pub fn generation(&self, generation: &str) {
        self.config_generation.reset();
        self.config_generation
            .with_label_values(&[generation])
            .set(1);
    }

    pub fn audit_failure(&self) {
        self.audit_failures.inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A label value from a fixed vocabulary (codes, categories): kept when it
/// looks like one, else `other`, so no free text becomes a series.
fn fixed_label(value: &str) -> &str {
    let fixed = !value.is_empty()
        && value.len() <= 40
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fixed {
        value
    } else {
        "other"
    }
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond(&request))
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(request: &Request<Incoming>) -> HttpResponse {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            METRICS.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            b"metrics are served at /metrics\n".to_vec(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Binds the metrics listener (`--metrics-bind`).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}
