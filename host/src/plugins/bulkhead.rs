//! The bulkhead of a module: a bound on its calls in progress, so that a
//! slow database cannot take every blocking thread (tokio's pool is
//! shared by all modules) and its callers get a clear MODULE_BUSY instead
//! of an unbounded queue.
//!
//! Two bounds: `concurrent` calls run (each on a blocking thread, in the
//! PostgreSQL module each with a pooled connection), and up to `queued`
//! more wait here for a running place, on the async runtime (no thread,
//! a few hundred bytes each), for at most `queue_wait`. A call beyond
//! both is refused at once. Waiting here rather than inside the module
//! is what lets more clients than the pool has connections be served
//! in turn: the benchmark's 16 and 64 clients against a pool of 10.

use std::sync::Arc;
use std::time::Duration;

use mcp_delegate_plugin_api::{codes, BusyAnswer, ToolError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Used when neither the entry nor the plugin says how many calls the
/// module serves at once.
pub const DEFAULT_CONCURRENT_CALLS: u32 = 16;
/// Calls admitted beyond the running ones, waiting for a place.
pub const DEFAULT_QUEUED_CALLS: u32 = 64;
/// How long a queued call waits for a place before MODULE_BUSY.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds of one module's bulkhead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadLimits {
    pub concurrent: u32,
    pub queued: u32,
    /// Zero: no bound (as `pool.connectionTimeoutMillis: 0` means).
    pub queue_wait: Duration,
    /// What a queued call that waited in vain is told: the plugin's
    /// answer (`POOL_EXHAUSTED` for PostgreSQL), else MODULE_BUSY.
    pub timeout_answer: Option<BusyAnswer>,
}

impl BulkheadLimits {
    /// Calls admitted at once (running or waiting).
    pub fn admitted(&self) -> u32 {
        self.concurrent.saturating_add(self.queued)
    }
}

pub struct Bulkhead {
    limits: BulkheadLimits,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

/// A running place, held until the plugin returns.
pub struct Place {
    _admitted: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

fn permits(count: u32) -> Arc<Semaphore> {
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    Arc::new(Semaphore::new(count.min(Semaphore::MAX_PERMITS)))
}

impl Bulkhead {
    pub fn new(limits: BulkheadLimits) -> Self {
        Self {
            admitted: permits(limits.admitted()),
            running: permits(limits.concurrent),
            limits,
        }
    }

    pub fn limits(&self) -> &BulkheadLimits {
        &self.limits
    }

    fn busy(&self, module: &str, why: &str) -> ToolError {
        ToolError::new(
            codes::MODULE_BUSY,
            format!(
                "module '{module}' is running as many calls as it may ({} at once, {} more \
                 waiting){why}; nothing ran, retry later",
                self.limits.concurrent, self.limits.queued
            ),
        )
        .with("maxConcurrentCalls", self.limits.concurrent)
        .with("queuedCalls", self.limits.queued)
    }

    /// The answer to a call that waited `queue_wait` for a place.
    fn waited_in_vain(&self, module: &str) -> ToolError {
        let waited = self.limits.queue_wait.as_millis();
        match &self.limits.timeout_answer {
            Some(answer) => ToolError::new(
                &answer.code,
                format!(
                    "module '{module}': all {} of its calls were in progress and none ended \
                     within {waited} ms; nothing ran; {}",
                    self.limits.concurrent, answer.hint
                ),
            ),
            None => self.busy(
                module,
                &format!(" and a place did not free within {waited} ms"),
            ),
        }
        .with("maxConcurrentCalls", self.limits.concurrent)
        .with("queuedCalls", self.limits.queued)
    }

    /// A running place: at once if one is free, after a wait in the queue
    /// if the queue has room, else MODULE_BUSY at once; MODULE_BUSY too
    /// when the wait exceeds the queue timeout.
    pub async fn enter(&self, module: &str) -> Result<Place, ToolError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.busy(module, ""))?;
        let running = match self.running.clone().try_acquire_owned() {
            Ok(running) => running,
            Err(_) => {
                let wait = self.running.clone().acquire_owned();
                let waited = if self.limits.queue_wait.is_zero() {
                    Ok(wait.await)
                } else {
                    tokio::time::timeout(self.limits.queue_wait, wait).await
                };
                match waited {
                    Ok(Ok(running)) => running,
                    _ => return Err(self.waited_in_vain(module)),
                }
            }
        };
        Ok(Place {
            _admitted: admitted,
            _running: running,
        })
    }

    /// Calls in progress now (running or waiting).
    pub fn in_progress(&self) -> usize {
        usize::try_from(self.limits.admitted())
            .unwrap_or(usize::MAX)
            .saturating_sub(self.admitted.available_permits())
    }

    /// Calls running now.
    pub fn running(&self) -> usize {
        usize::try_from(self.limits.concurrent)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.running.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `concurrent` running places and one in the queue.
    fn bulkhead_of(
        concurrent: u32,
        queue_wait: Duration,
        timeout_answer: Option<BusyAnswer>,
    ) -> Bulkhead {
        Bulkhead::new(BulkheadLimits {
            concurrent,
            queued: 1,
            queue_wait,
            timeout_answer,
        })
    }

    fn bulkhead(queue_wait: Duration) -> Bulkhead {
        bulkhead_of(2, queue_wait, None)
    }

    #[tokio::test]
    async fn queued_calls_wait_for_a_place_and_the_rest_are_refused() {
        let bulkhead = Arc::new(bulkhead(Duration::from_secs(10)));
        let first = bulkhead.enter("m").await.unwrap();
        let _second = bulkhead.enter("m").await.unwrap();
        assert_eq!(bulkhead.running(), 2);
        // The third waits (no running place), the fourth finds no room.
        let waiting = {
            let bulkhead = bulkhead.clone();
            tokio::spawn(async move { bulkhead.enter("m").await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a queued call waits for a place");
        assert_eq!(bulkhead.in_progress(), 3);
        let refused = bulkhead.enter("m").await.err().unwrap();
        assert_eq!(refused.error, codes::MODULE_BUSY);
        // A place frees: the waiting call runs.
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the queued call got the freed place")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_queued_call_gives_up_after_the_queue_timeout() {
        let bulkhead = bulkhead(Duration::from_millis(100));
        let _places = (
            bulkhead.enter("m").await.unwrap(),
            bulkhead.enter("m").await.unwrap(),
        );
        let started = std::time::Instant::now();
        let error = bulkhead.enter("m").await.err().unwrap();
        assert_eq!(error.error, codes::MODULE_BUSY);
        assert!(error.message.contains("did not free within 100 ms"));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            bulkhead.in_progress(),
            2,
            "the place in the queue is given back"
        );
    }

    #[tokio::test]
    async fn the_plugin_says_what_a_call_that_waited_in_vain_is_told() {
        let bulkhead = bulkhead_of(
            1,
            Duration::from_millis(50),
            Some(BusyAnswer {
                wait_millis: 50,
                code: codes::POOL_EXHAUSTED.to_owned(),
                hint: "raise pool.max".to_owned(),
            }),
        );
        let _running = bulkhead.enter("m").await.unwrap();
        let error = bulkhead.enter("m").await.err().unwrap();
        assert_eq!(error.error, codes::POOL_EXHAUSTED);
        assert!(error.message.contains("module 'm'") && error.message.ends_with("raise pool.max"));
    }

    #[tokio::test]
    async fn a_zero_queue_wait_means_no_bound() {
        let bulkhead = Arc::new(bulkhead_of(1, Duration::ZERO, None));
        let running = bulkhead.enter("m").await.unwrap();
        let waiting = {
            let bulkhead = bulkhead.clone();
            tokio::spawn(async move { bulkhead.enter("m").await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "still waiting, not refused at once");
        drop(running);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the queued call got the freed place")
            .unwrap()
            .unwrap();
    }
}
