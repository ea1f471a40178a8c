//! The HTTP server: hyper on tokio, a tiny router, and JSON responses for
//! everything that is not MCP. Every error becomes a response; no request
//! can panic the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::auth::Credentials;
use crate::auth::{AuthFailure, TokenRejection};
use crate::call::{RequestTiming, ToolCall};
use crate::mcp::{direct, envelope};
use crate::metrics::METRICS;
use crate::reload::Server;
use crate::runtime::Runtime;
use crate::status::config_status;
use crate::trace::TraceParent;

pub type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

/// Everything a request handler needs: the server, whose current
/// generation each request loads once and keeps to its end.
pub struct HttpApp {
    pub server: Arc<Server>,
    /// Set when a stop signal came: new requests get 503.
    pub draining: std::sync::atomic::AtomicBool,
}

fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn route(app: Arc<HttpApp>, request: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    if app.draining.load(std::sync::atomic::Ordering::Acquire) {
        // A request on a keep-alive connection after the stop signal: the
        // calls in flight finish, new ones go elsewhere.
        let mut response = json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "SHUTTING_DOWN", "message": "the server is stopping; retry on another replica"}),
        );
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        METRICS.http_response(503);
        return Ok(response);
    }
    let runtime = app.server.current();
    let path = request.uri().path();
    let response = match (request.method(), path) {
        (_, "/mcp") => match authenticate(&runtime, request).await {
            Ok(request) if request.method() == Method::POST => post_mcp(&runtime, request).await,
            Ok(request) => runtime.mcp.handle(request).await,
            Err(response) => response,
        },
        (
            &Method::GET,
            "/.well-known/oauth-protected-resource" | "/.well-known/oauth-protected-resource/mcp",
        ) => match &runtime.authenticator {
            Some(authenticator) => json_response(
                StatusCode::OK,
                &runtime
                    .resource
                    .metadata(&authenticator.requestor_issuers()),
            ),
            None => not_found(),
        },
        (&Method::GET, "/health") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/ready") => ready(&app.server, runtime).await,
        (_, "/health" | "/ready") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "METHOD_NOT_ALLOWED", "message": "use GET"}),
        ),
        _ => not_found(),
    };
    METRICS.http_response(response.status().as_u16());
    Ok(response)
}

fn not_found() -> HttpResponse {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": "NOT_FOUND", "message": "no such endpoint; MCP is served at /mcp"}),
    )
}

/// A request's `traceparent` header, if well formed.
pub fn trace_parent(headers: &http::HeaderMap) -> Option<TraceParent> {
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)
}

/// The bearer token of a request: exactly one `Authorization: Bearer …`
/// header (never a query parameter).
fn bearer_token(headers: &http::HeaderMap) -> Result<&str, AuthFailure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthFailure::Missing);
    };
    if values.next().is_some() {
        return Err(AuthFailure::Invalid(TokenRejection::Malformed));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthFailure::Invalid(TokenRejection::Malformed))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthFailure::Invalid(TokenRejection::Malformed)),
    }
}

/// Attaches the caller's credentials to the request, or answers 401/403
/// with a challenge pointing to the protected-resource metadata.
async fn authenticate(
    runtime: &Runtime,
    mut request: Request<Incoming>,
) -> Result<Request<Incoming>, HttpResponse> {
    // Timing only feeds traces: no clock reads or extension when off.
    let received = crate::trace::enabled().then(SystemTime::now);
    let Some(authenticator) = &runtime.authenticator else {
        if let Some(received) = received {
            request.extensions_mut().insert(RequestTiming {
                received,
                authenticated: None,
            });
        }
        return Ok(request);
    };
    let outcome = match bearer_token(request.headers()) {
        Ok(token) => authenticator.authenticate(token).await,
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(credentials) => {
            METRICS.auth("ok");
            request.extensions_mut().insert(credentials);
            if let Some(received) = received {
                request.extensions_mut().insert(RequestTiming {
                    received,
                    authenticated: Some((received, SystemTime::now())),
                });
            }
            Ok(request)
        }
        Err(failure) => {
            let reason = failure.body()["error"]
                .as_str()
                .unwrap_or("unauthorized")
                .to_owned();
            METRICS.auth(&reason);
            let parent = trace_parent(request.headers());
            runtime.core.audit_refused_request(
                failure.status(),
                &reason,
                parent.as_ref().map(|parent| parent.trace_id.as_str()),
            );
            tracing::info!(status = failure.status(), reason = %failure.body()["error_description"], "request refused");
            let status = StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut response = json_response(status, &failure.body());
            if let Ok(challenge) =
                header::HeaderValue::from_str(&runtime.resource.challenge(&failure))
            {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            Err(response)
        }
    }
}

/// JSON-RPC error response outside rmcp (the request never reached it).
fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    json_response(
        status,
        &json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}),
    )
}

/// Reads the body under the size limit and checks its JSON-RPC envelope
/// ([`envelope`]) before either MCP path sees it, so oversized and
/// malformed requests get stable, documented answers: 413, and a JSON-RPC
/// error (-32700, -32600 or -32602) with 400.
async fn post_mcp(runtime: &Runtime, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let limit = runtime.config.mcp.max_request_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large(limit);
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => return too_large(limit),
        Err(err) => {
            tracing::debug!(error = %err, "request body could not be read");
            return jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32700,
                "Parse error: the request body could not be read",
            );
        }
    };
    if let Err(refused) = envelope::check(&bytes) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"jsonrpc": "2.0", "id": refused.id(),
                    "error": {"code": refused.code(), "message": refused.to_string()}}),
        );
    }
    if let Some(call) = runtime.mcp.recognize(&parts.headers, &bytes) {
        let reply = runtime
            .core
            .call_tool(ToolCall {
                name: call.name.to_string(),
                credentials: parts.extensions.get::<Credentials>().cloned(),
                args_json: call.args_json.to_owned(),
                trace_parent: trace_parent(&parts.headers),
                timing: parts
                    .extensions
                    .get::<RequestTiming>()
                    .copied()
                    .unwrap_or_default(),
            })
            .await;
        let mut response = Response::new(direct::encode(&call, reply).boxed());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        return response;
    }
    runtime
        .mcp
        .handle(Request::from_parts(parts, Full::new(bytes)))
        .await
}

fn too_large(limit: usize) -> HttpResponse {
    json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &json!({
            "jsonrpc": "2.0", "id": null,
            "error": {"code": -32600, "message": format!("request body exceeds the limit of {limit} bytes (mcp.maxRequestBytes)")}
        }),
    )
}

/// The next connection, once there is a place for it; `None` after a
/// failed accept (out of file descriptors and the like: back off, keep
/// serving).
async fn accept_within(
    listener: &TcpListener,
    places: &Arc<tokio::sync::Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let place = places.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, peer, place)),
        Err(err) => {
            tracing::warn!(error = %err, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// How long `/ready` waits for the modules' health reports.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// 200 when every configured module has a running instance, else 503 with
/// the modules that are missing and why. `status` adds each running
/// module's health report (for the PostgreSQL module, its hardening
/// profile); a database that is down does not make the server unready.
/// `config` names the generation serving and the last refused reload.
async fn ready(server: &Server, runtime: Arc<Runtime>) -> HttpResponse {
    let modules = &runtime.registry.modules;
    let running: Vec<&str> = modules.running.iter().map(|m| m.name.as_str()).collect();
    let unavailable: Vec<Value> = modules
        .unavailable
        .iter()
        .map(|m| json!({"module": m.name, "reason": m.reason}))
        .collect();
    let status = if modules.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // The probes run at once, on blocking threads; all share one deadline.
    let probes: Vec<_> = modules
        .running
        .iter()
        .map(|module| {
            let module = module.clone();
            let name = module.name.clone();
            (name, tokio::task::spawn_blocking(move || module.health()))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + READY_PROBE_TIMEOUT;
    let mut module_status = serde_json::Map::new();
    for (name, probe) in probes {
        let report = match tokio::time::timeout_at(deadline, probe).await {
            Ok(Ok(report)) => {
                let mut json = json!({"healthy": report.healthy});
                for (key, value) in report.status {
                    json[key] = value;
                }
                json
            }
            _ => json!({"healthy": false, "detail": "no health report in time"}),
        };
        module_status.insert(name, report);
    }
    json_response(
        status,
        &json!({"ready": modules.is_ready(), "modules": running, "unavailable": unavailable,
                "status": module_status,
                "config": config_status(&runtime.generation, &server.reload_log)}),
    )
}

/// The bounds on what clients may hold (`mcp.*`, read at start).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at once (`mcp.maxConnections`).
    pub max_connections: usize,
    /// Headers of a request, and the idle time of a keep-alive connection
    /// (`mcp.headerReadTimeoutMillis`).
    pub header_read_timeout: Duration,
    /// A whole request, answered (`mcp.requestTimeoutMillis`).
    pub request_timeout: Duration,
}

impl ConnectionLimits {
    pub fn of(mcp: &crate::config::McpConfig) -> Self {
        Self {
            max_connections: mcp.max_connections.max(1),
            header_read_timeout: Duration::from_millis(mcp.header_read_timeout_millis.max(1)),
            request_timeout: Duration::from_millis(mcp.request_timeout_millis.max(1)),
        }
    }
}

/// `route`, answered within `limit`: else 504 and the connection closes
/// (its body may be half read). A tool call that started is its own
/// task and runs to its end.
async fn route_within(
    app: Arc<HttpApp>,
    request: Request<Incoming>,
    limit: Duration,
) -> Result<HttpResponse, Infallible> {
    match tokio::time::timeout(limit, route(app, request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = json_response(
                StatusCode::GATEWAY_TIMEOUT,
                &json!({"error": "REQUEST_TIMEOUT", "message": format!(
                    "the request was not answered within {} ms (mcp.requestTimeoutMillis)",
                    limit.as_millis())}),
            );
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            METRICS.http_response(504);
            Ok(response)
        }
    }
}

/// Serves until `shutdown` resolves; then stops accepting, answers new
/// requests on open connections with 503 and `Connection: close`, and lets
/// the requests in flight finish (up to `drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Arc<HttpApp>,
    shutdown: impl std::future::Future<Output = ()>,
    drain_timeout: Duration,
    limits: ConnectionLimits,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and dribbles its headers (slowloris)
    // is dropped once `mcp.headerReadTimeoutMillis` has passed; hyper runs
    // the same timer while a keep-alive connection waits for its next
    // request, so it is also the idle timeout.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // At the cap, nothing is accepted: new connections wait in the
    // kernel's backlog and open ones go on unaffected.
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept_within(&listener, &places) => accepted,
            () = &mut shutdown => break,
        };
        let Some((stream, peer, place)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            // hyper's header timer starts only once it knows the protocol,
            // that is, after the first bytes: a connection that sends
            // nothing would be held forever. Bound that wait here.
            let mut probe = [0u8; 1];
            let spoke = tokio::select! {
                peeked = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut probe)) => {
                    matches!(peeked, Ok(Ok(read)) if read > 0)
                }
                _ = stopping.wait_for(|stop| *stop) => false,
            };
            if !spoke {
                drop(place);
                return;
            }
            let request_timeout = limits.request_timeout;
            let service =
                service_fn(move |request| route_within(app.clone(), request, request_timeout));
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    app.draining
        .store(true, std::sync::atomic::Ordering::Release);
    let _ = stop.send(true);
    tokio::select! {
        () = graceful.shutdown() => {
            tracing::info!("every request in flight finished");
        },
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(
                drain_timeout_ms = drain_timeout.as_millis() as u64,
                "requests still running after the drain timeout; closing their connections"
            );
        }
    }
}
