//! The instance's connection pool: r2d2 managing our own wire connections.
//! Built without connecting, so a database that is down at startup stops
//! neither the host nor the other modules; connections heal by themselves
//! when it comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcp_delegate_plugin_api::{codes, PoolFacts, ToolError};

use crate::config::PgModuleConfig;
use crate::wire::{ConnectParams, Connection, WireError};

/// "Wait without limit": long enough to be forever, short enough that
/// `Instant + timeout` cannot overflow (r2d2 panics on a zero timeout).
const UNLIMITED_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// A connection idle longer than this is pinged before use; busier ones
/// are not (a ping is a round trip).
const VALIDATE_AFTER_IDLE: Duration = Duration::from_secs(5);
/// Added to the statement timeout to bound any wait for the server (the
/// default of `clientTimeoutMillis`).
const READ_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);
/// How long a call waits for a connection while the database is known to
/// be down (the last attempt to connect failed): long enough for a
/// connect to a database that has just come back, short enough that a
/// call during an outage fails fast instead of holding its client for
/// the whole `connectionTimeoutMillis`.
const WAIT_WHILE_DOWN: Duration = Duration::from_millis(250);

pub type PooledConnection = r2d2::PooledConnection<WireManager>;

thread_local! {
    /// Time this thread spent waiting for connections since the last
    /// [`PgPool::facts`]: a call runs on one thread from start to end.
    static CALL_WAIT: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
    /// When this thread's current call started.
    static CALL_START: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Microseconds since this thread's current call started.
pub fn micros_since_call_start() -> u64 {
    CALL_START.get().map_or(0, |start| {
        u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
    })
}

pub struct WireManager {
    params: ConnectParams,
    /// Set when an attempt to connect fails, cleared when one succeeds.
    down: Arc<AtomicBool>,
}

impl r2d2::ManageConnection for WireManager {
    type Connection = Connection;
    type Error = WireError;

    fn connect(&self) -> Result<Connection, WireError> {
        let connected = Connection::connect(&self.params);
        self.down.store(connected.is_err(), Ordering::Release);
        connected
    }

    fn is_valid(&self, connection: &mut Connection) -> Result<(), WireError> {
        if connection.idle_for() < VALIDATE_AFTER_IDLE {
            return Ok(());
        }
        let result = connection.simple_query("")?;
        match result.error {
            Some(error) => Err(WireError::Db(error)),
            None => Ok(()),
        }
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.is_broken()
    }
}

/// r2d2's background connection errors, to tracing (never with secrets:
/// server errors do not carry the password).
#[derive(Debug)]
struct LogErrors {
    instance: String,
}

impl r2d2::HandleError<WireError> for LogErrors {
    fn handle_error(&self, error: WireError) {
        tracing::warn!(module = %self.instance, error = %error, "database connection failed");
    }
}

pub struct PgPool {
    instance: String,
    pool: r2d2::Pool<WireManager>,
    max_size: u32,
    /// `pool.connectionTimeoutMillis` (or "unlimited").
    wait: Duration,
    /// Shared with the manager: whether the last connect failed.
    down: Arc<AtomicBool>,
}

fn millis_or_unlimited(millis: u64) -> Duration {
    if millis == 0 {
        UNLIMITED_WAIT
    } else {
        Duration::from_millis(millis)
    }
}

impl PgPool {
    pub fn new(instance: &str, config: &PgModuleConfig) -> Result<Self, String> {
        let tls = crate::wire::tls::client_config(config.options.ssl.as_ref())?;
        if tls.is_some() {
            crate::wire::tls::server_name(&config.host)?;
        }
        let require_auth = crate::config::require_auth(&config.options)?;
        let connect_timeout = (config.pool.connection_timeout_millis > 0)
            .then(|| Duration::from_millis(config.pool.connection_timeout_millis));
        let params = ConnectParams {
            host: config.host.clone(),
            port: config.port,
            database: config.database.clone(),
            user: config.user.clone(),
            password: config.password.clone(),
            application_name: format!("mcp-delegate/{instance}"),
            statement_timeout_ms: config.statement_timeout_millis,
            connect_timeout,
            read_timeout: Some(match config.client_timeout_millis {
                Some(millis) => Duration::from_millis(millis.max(1)),
                None => {
                    Duration::from_millis(config.statement_timeout_millis) + READ_TIMEOUT_MARGIN
                }
            }),
            tls,
            require_auth,
            require_channel_binding: config.options.channel_binding()
                == crate::config::ChannelBindingMode::Require,
            pooling: config.pooler.pooling(),
        };
        let idle_timeout = match config.pool.idle_timeout_millis {
            0 => None,
            millis => Some(Duration::from_millis(millis)),
        };
        let wait = millis_or_unlimited(config.pool.connection_timeout_millis);
        let down = Arc::new(AtomicBool::new(false));
        let pool = r2d2::Pool::builder()
            .max_size(config.pool.max)
            .min_idle(Some(config.pool.min))
            .idle_timeout(idle_timeout)
            .connection_timeout(wait)
            .error_handler(Box::new(LogErrors {
                instance: instance.to_owned(),
            }))
            .build_unchecked(WireManager {
                params,
                down: down.clone(),
            });
        Ok(Self {
            instance: instance.to_owned(),
            pool,
            max_size: config.pool.max,
            wait,
            down,
        })
    }

    /// Starts counting this thread's waits for a new call.
    pub fn start_call() {
        CALL_WAIT.set(Duration::ZERO);
        CALL_START.set(Some(std::time::Instant::now()));
    }

    /// The pool now, and how long this thread's current call has waited
    /// for connections (reset by the read).
    pub fn facts(&self) -> PoolFacts {
        let state = self.pool.state();
        PoolFacts {
            max: self.max_size,
            open: state.connections,
            idle: state.idle_connections,
            wait_micros: u64::try_from(CALL_WAIT.take().as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// A connection, or a clear error: the database is down, or every
    /// connection is busy (the seed's "pool exhausted" case). While the
    /// database is known to be down, the wait is short: calls fail fast
    /// during an outage, and the first one after it connects and heals.
    pub fn get(&self) -> Result<PooledConnection, ToolError> {
        let started = std::time::Instant::now();
        let wait = if self.down.load(Ordering::Acquire) {
            self.wait.min(WAIT_WHILE_DOWN)
        } else {
            self.wait
        };
        let got = self.pool.get_timeout(wait);
        CALL_WAIT.set(CALL_WAIT.get() + started.elapsed());
        got.map_err(|err| {
            let state = self.pool.state();
            if state.connections >= self.max_size && state.idle_connections == 0 {
                ToolError::new(
                    codes::POOL_EXHAUSTED,
                    format!(
                        "module '{}': no database connection became free in time (all {} in use); \
                         raise pool.max or pool.connectionTimeoutMillis",
                        self.instance, self.max_size
                    ),
                )
            } else {
                tracing::warn!(module = %self.instance, error = %err, "database unavailable");
                ToolError::new(
                    codes::DATABASE_UNAVAILABLE,
                    format!(
                        "module '{}': the database is unavailable right now",
                        self.instance
                    ),
                )
            }
        })
    }

    /// A connection, waiting at most `timeout` (for a second connection
    /// while the caller holds one: never long, never a deadlock).
    pub fn get_within(&self, timeout: Duration) -> Option<PooledConnection> {
        self.pool.get_timeout(timeout).ok()
    }

    /// Asks the server, over `connection`, which database and version it is.
    pub fn describe(connection: &mut Connection) -> Result<String, String> {
        match crate::service_query::simple(connection, crate::sql::HEALTH) {
            Ok(result) if result.error.is_none() => {
                let row = result.rows.first();
                let field = |i: usize| {
                    row.and_then(|r| r.get(i).cloned().flatten())
                        .unwrap_or_default()
                };
                Ok(format!(
                    "connected to database '{}' (PostgreSQL {})",
                    field(0),
                    field(1)
                ))
            }
            Ok(result) => Err(format!(
                "database error: {}",
                result.error.map(|e| e.message).unwrap_or_default()
            )),
            Err(err) => Err(format!("database unavailable: {err}")),
        }
    }
}
