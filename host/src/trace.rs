//! W3C trace context and OpenTelemetry spans, exported with OTLP/HTTP when
//! `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.
//!
//! A `tools/call` becomes a server span (`mcp tools/call`), a child of the
//! caller's `traceparent` (header, or `_meta` in the 2026-07-28 form) when
//! there is one, with children for authentication, the delegated identity
//! (token exchange), the plugin call, and under it the database batch
//! (timed by the module and reported in its call facts). Without an
//! endpoint nothing is recorded and nothing is paid.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// A caller's `traceparent`: its trace, the span to be a child of, and
/// whether it is sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None`
    /// unless well formed, with neither id all zeros.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |text: &str, len: usize| {
            text.len() == len
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        };
        let nonzero = |text: &str| text.bytes().any(|byte| byte != b'0');
        let valid = hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && hex(trace, 32)
            && nonzero(trace)
            && hex(span, 16)
            && nonzero(span)
            && hex(flags, 2);
        let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
        valid.then(|| Self {
            trace_id: trace.to_owned(),
            span_id: span.to_owned(),
            sampled,
        })
    }
}

struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
pub struct TraceSetupError {
    endpoint: String,
    reason: String,
}

/// Starts exporting spans to `endpoint` (the collector's base URL;
/// `/v1/traces` is added). Spans are sent in batches from a thread of
/// their own.
pub fn init(endpoint: &str) -> Result<(), TraceSetupError> {
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| TraceSetupError {
            endpoint: url.clone(),
            reason: err.to_string(),
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("mcp-delegate")
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let tracer = provider.tracer("mcp-delegate");
    let _ = EXPORTER.set(Exporter { provider, tracer });
    Ok(())
}

/// Whether spans are recorded.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Sends what is buffered and stops (at shutdown).
pub fn shutdown() {
    if let Some(exporter) = EXPORTER.get() {
        let _ = exporter.provider.shutdown();
    }
}

/// The spans of one tool call, recorded with explicit times and ended
/// together when the call is done.
pub struct CallTrace {
    context: Context,
    /// The trace id (32 hex digits), for the audit line and the plugin.
    pub trace_id: String,
}

/// A finished step of a call, to become a child span.
pub struct Step {
    pub name: &'static str,
    pub start: SystemTime,
    pub end: SystemTime,
}

impl CallTrace {
    /// The server span of a call received at `start`; `None` when tracing
    /// is off.
    pub fn start(tool: &str, parent: Option<&TraceParent>, start: SystemTime) -> Option<Self> {
        let exporter = EXPORTER.get()?;
        let parent_context = parent
            .and_then(|parent| {
                let trace_id = TraceId::from_hex(&parent.trace_id).ok()?;
                let span_id = SpanId::from_hex(&parent.span_id).ok()?;
                let flags = if parent.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                };
                Some(Context::new().with_remote_span_context(SpanContext::new(
                    trace_id,
                    span_id,
                    flags,
                    true,
                    TraceState::default(),
                )))
            })
            .unwrap_or_default();
        let span = exporter
            .tracer
            .span_builder("mcp tools/call")
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([KeyValue::new("mcp.tool", tool.to_owned())])
            .start_with_context(&exporter.tracer, &parent_context);
        let trace_id = span.span_context().trace_id().to_string();
        Some(Self {
            context: parent_context.with_span(span),
            trace_id,
        })
    }

    /// A finished child step of the call; `children`: its own finished
    /// children.
    pub fn step(&self, step: Step, children: &[Step]) {
        let Some(exporter) = EXPORTER.get() else {
            return;
        };
        let span = exporter
            .tracer
            .span_builder(step.name)
            .with_kind(SpanKind::Internal)
            .with_start_time(step.start)
            .start_with_context(&exporter.tracer, &self.context);
        let context = self.context.with_span(span);
        for child in children {
            let mut span = exporter
                .tracer
                .span_builder(child.name)
                .with_kind(SpanKind::Client)
                .with_start_time(child.start)
                .start_with_context(&exporter.tracer, &context);
            span.end_with_timestamp(child.end);
        }
        context.span().end_with_timestamp(step.end);
    }

    /// Ends the call's span with its outcome.
    pub fn finish(self, module: Option<&str>, error_code: Option<&str>, end: SystemTime) {
        let span = self.context.span();
        if let Some(module) = module {
            span.set_attribute(KeyValue::new("mcp.module", module.to_owned()));
        }
        if let Some(code) = error_code {
            span.set_attribute(KeyValue::new("mcp.error_code", code.to_owned()));
            span.set_status(Status::error(code.to_owned()));
        }
        span.end_with_timestamp(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_parsed_strictly() {
        let good = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            good,
            Some(TraceParent {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: "00f067aa0ba902b7".into(),
                sampled: true,
            })
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "not a traceparent",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
