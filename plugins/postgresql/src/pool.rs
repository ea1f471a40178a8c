//! The instance's connection pool. Built without connecting, so a database
//! that is down at startup stops neither the host nor the other modules.

use std::time::Duration;

use mcp_delegate_plugin_api::HealthReport;
use r2d2_postgres::postgres::{Config as PgConfig, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use crate::config::PgModuleConfig;

/// "Wait without limit": long enough to be forever, short enough that
/// `Instant + timeout` cannot overflow (r2d2 panics on a zero timeout).
const UNLIMITED_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct PgPool {
    pool: r2d2::Pool<PostgresConnectionManager<NoTls>>,
}

/// r2d2's background connection errors, to tracing (never with secrets:
/// postgres errors do not carry the password).
#[derive(Debug)]
struct LogErrors {
    instance: String,
}

impl r2d2::HandleError<r2d2_postgres::postgres::Error> for LogErrors {
    fn handle_error(&self, error: r2d2_postgres::postgres::Error) {
        tracing::warn!(module = %self.instance, error = %error, "database connection failed");
    }
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
        if matches!(config.options.ssl, Some(ref ssl) if ssl != &serde_json::Value::Bool(false)) {
            return Err(
                "options.ssl: TLS connections are not supported by this version yet".into(),
            );
        }
        let mut pg = PgConfig::new();
        pg.host(&config.host)
            .port(config.port)
            .dbname(&config.database)
            .user(&config.user)
            .application_name(&format!("mcp-delegate/{instance}"));
        if let Some(password) = &config.password {
            pg.password(password);
        }
        if config.pool.connection_timeout_millis > 0 {
            pg.connect_timeout(Duration::from_millis(config.pool.connection_timeout_millis));
        }
        let manager = PostgresConnectionManager::new(pg, NoTls);
        let idle_timeout = match config.pool.idle_timeout_millis {
            0 => None,
            millis => Some(Duration::from_millis(millis)),
        };
        let pool = r2d2::Pool::builder()
            .max_size(config.pool.max)
            .min_idle(Some(config.pool.min))
            .idle_timeout(idle_timeout)
            .connection_timeout(millis_or_unlimited(config.pool.connection_timeout_millis))
            .error_handler(Box::new(LogErrors {
                instance: instance.to_owned(),
            }))
            .build_unchecked(manager);
        Ok(Self { pool })
    }

    /// Checks out a connection and asks the server who it is.
    pub fn health(&self) -> HealthReport {
        let mut connection = match self.pool.get() {
            Ok(connection) => connection,
            Err(err) => {
                return HealthReport {
                    healthy: false,
                    detail: format!("database unavailable: {err}"),
                }
            }
        };
        match connection.query_one(
            "SELECT current_database()::text, current_setting('server_version')",
            &[],
        ) {
            Ok(row) => HealthReport {
                healthy: true,
                detail: format!(
                    "connected to database '{}' (PostgreSQL {})",
                    row.get::<_, String>(0),
                    row.get::<_, String>(1)
                ),
            },
            Err(err) => HealthReport {
                healthy: false,
                detail: format!("database error: {err}"),
            },
        }
    }
}
