//! The bulkhead of a module: a bound on its calls in progress, so that a
//! slow database cannot take every blocking thread (tokio's pool is
//! shared by all modules) and its callers get a fast, clear MODULE_BUSY
//! instead of a growing queue.

use std::sync::Arc;

use mcp_delegate_plugin_api::{codes, ToolError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Used when neither the entry nor the plugin says how many calls the
/// module serves at once.
pub const DEFAULT_CONCURRENT_CALLS: u32 = 16;
/// Calls admitted beyond the concurrent ones: they wait inside the
/// module (the PostgreSQL module: for a pooled connection, at most
/// `pool.connectionTimeoutMillis`), so a short burst is served rather
/// than refused.
pub const DEFAULT_QUEUED_CALLS: u32 = 4;

/// The bounds of one module's bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadLimits {
    pub concurrent: u32,
    pub queued: u32,
}

impl BulkheadLimits {
    /// Calls admitted at once.
    pub fn admitted(self) -> u32 {
        self.concurrent.saturating_add(self.queued)
    }
}

pub struct Bulkhead {
    limits: BulkheadLimits,
    permits: Arc<Semaphore>,
}

impl Bulkhead {
    pub fn new(limits: BulkheadLimits) -> Self {
        let admitted = usize::try_from(limits.admitted()).unwrap_or(usize::MAX);
        Self {
            limits,
            permits: Arc::new(Semaphore::new(admitted.min(Semaphore::MAX_PERMITS))),
        }
    }

    pub fn limits(&self) -> BulkheadLimits {
        self.limits
    }

    /// A place for one call, held until the plugin returns; MODULE_BUSY
    /// at once when every place is taken (nothing waits here).
    pub fn enter(&self, module: &str) -> Result<OwnedSemaphorePermit, ToolError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            ToolError::new(
                codes::MODULE_BUSY,
                format!(
                    "module '{module}' is running as many calls as it may ({} at once, {} more \
                     waiting); nothing ran, retry later",
                    self.limits.concurrent, self.limits.queued
                ),
            )
            .with("maxConcurrentCalls", self.limits.concurrent)
            .with("queuedCalls", self.limits.queued)
        })
    }

    /// Calls in progress now.
    pub fn in_progress(&self) -> usize {
        usize::try_from(self.limits.admitted())
            .unwrap_or(usize::MAX)
            .saturating_sub(self.permits.available_permits())
    }
}
