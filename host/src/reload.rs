//! Hot reload: the generation now serving, and how a new one replaces it.
//!
//! A reload (on `SIGHUP`, or when the watcher sees the config's content
//! hash change) builds a new [`Runtime`] next to the current one with
//! [`Runtime::build`], keeping unchanged module instances, and swaps it in
//! whole. Requests load the current runtime once and finish on it, so no
//! call is dropped: a removed module stops taking calls at the swap and is
//! shut down once the requests that still hold the old generation are done
//! (at most [`Server::drain_timeout`] later). A reload that is refused
//! changes nothing; the error is logged and shown by `/ready` and
//! `health-check` until a reload succeeds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use mcp_delegate_plugin_api::ConfigIssue;

use crate::cli::CommonArgs;
use crate::config::{self, display_path, ConfigSource};
use crate::metrics::METRICS;
use crate::plugins::{self, ModuleHandle};
use crate::runtime::{BuildArgs, Built, Runtime};
use crate::status::{ReloadFailure, ReloadLog};

/// The running server's configuration: the current generation, and what
/// it takes to build the next.
pub struct Server {
    current: ArcSwap<Runtime>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    config_path: PathBuf,
    common: CommonArgs,
    local_addr: SocketAddr,
    pub reload_log: Arc<ReloadLog>,
    /// How long a removed module's in-flight calls may take before it is
    /// shut down anyway.
    pub drain_timeout: Duration,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[error("reload refused: {} problem(s), first: {}", .errors.len(), first(.errors))]
pub struct ReloadRefused {
    pub errors: Vec<ConfigIssue>,
    /// The files the refused config was read from, if it could be read.
    refused_source: Option<ConfigSource>,
}

/// A refused content, so the watcher does not try it again until it, a
/// secret file it names, or the plugin directory changes.
struct Refused {
    hash: String,
    secret_files: Vec<PathBuf>,
    plugins: String,
}

fn first(issues: &[ConfigIssue]) -> String {
    issues
        .first()
        .map(|issue| format!("{}: {}", display_path(&issue.path), issue.message))
        .unwrap_or_default()
}

impl Server {
    pub fn new(
        runtime: Runtime,
        config_path: PathBuf,
        common: CommonArgs,
        local_addr: SocketAddr,
        reload_log: Arc<ReloadLog>,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            current: ArcSwap::from_pointee(runtime),
            reloading: tokio::sync::Mutex::new(()),
            config_path,
            common,
            local_addr,
            reload_log,
            drain_timeout,
        }
    }

    /// The generation now serving. A request loads it once and keeps it
    /// to the end.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Builds the config file anew and swaps it in, or changes nothing.
    pub async fn reload(&self, trigger: &str) -> Result<(), ReloadRefused> {
        self.reload_when(trigger, false).await
    }

    /// As [`Server::reload`]; with `only_if_changed`, nothing happens when
    /// the files hash as the running generation does (checked under the
    /// reload lock, so the watcher does not build again what a `SIGHUP`
    /// has just loaded).
    async fn reload_when(&self, trigger: &str, only_if_changed: bool) -> Result<(), ReloadRefused> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.current();
        if only_if_changed && previous.config.source.current_hash() == previous.generation.hash {
            return Ok(());
        }
        let started = Instant::now();
        let path = self.config_path.clone();
        let common = self.common.clone();
        let args_log = self.reload_log.clone();
        let local_addr = self.local_addr;
        let old = previous.clone();
        // Plugin code creates instances: keep it off the async workers.
        let built = tokio::task::spawn_blocking(move || {
            let args = BuildArgs {
                common: &common,
                local_addr: Some(local_addr),
                reload_log: args_log,
            };
            let Built {
                runtime,
                diagnostics,
                source,
            } = Runtime::build(&path, &args, Some(&old));
            let errors = runtime
                .as_ref()
                .map_or_else(|| diagnostics.errors.clone(), |new| refusal(&old, new));
            match runtime {
                Some(new) if errors.is_empty() => Ok(new),
                Some(new) => {
                    new.shutdown_modules_except(Some(&old));
                    Err(ReloadRefused {
                        errors,
                        refused_source: source,
                    })
                }
                None => Err(ReloadRefused {
                    errors,
                    refused_source: source,
                }),
            }
        })
        .await
        .unwrap_or_else(|join_error| {
            Err(ReloadRefused {
                errors: vec![ConfigIssue {
                    path: String::new(),
                    message: format!("the reload failed unexpectedly: {join_error}"),
                }],
                refused_source: None,
            })
        });
        let new = match built {
            Ok(new) => new,
            Err(refused) => {
                METRICS.reload(false);
                for error in &refused.errors {
                    tracing::error!(path = %display_path(&error.path), trigger, "reload refused: {}", error.message);
                }
                self.reload_log.failed(ReloadFailure {
                    at: SystemTime::now(),
                    errors: refused.errors.clone(),
                });
                tracing::error!(
                    generation = %previous.generation.short_hash(),
                    "the running configuration keeps serving"
                );
                return Err(refused);
            }
        };
        if let Some(authenticator) = new
            .authenticator
            .as_ref()
            .filter(|_| !same_authenticator(&previous, &new))
        {
            // Keys before the swap, so the first requests do not wait.
            authenticator.fetch_keys_now().await;
        }
        if previous.config.mcp.port != new.config.mcp.port {
            tracing::warn!("mcp.port changed: a new port takes effect at the next restart");
        }
        if !same_authenticator(&previous, &new) {
            new.start();
        }
        let removed: Vec<Arc<ModuleHandle>> = previous
            .registry
            .modules
            .running
            .iter()
            .filter(|module| !new.registry.modules.holds(module))
            .cloned()
            .collect();
        let kept = previous.registry.modules.running.len() - removed.len();
        let started_count = new.registry.modules.running.len() - kept;
        let generation = new.generation.short_hash().to_owned();
        METRICS.modules(&new.registry.modules);
        self.current.store(Arc::new(new));
        self.reload_log.succeeded();
        METRICS.reload(true);
        METRICS.generation(&generation);
        tracing::info!(
            trigger,
            %generation,
            modules_kept = kept,
            modules_started = started_count,
            modules_stopped = removed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "configuration reloaded"
        );
        drop(previous);
        for module in removed {
            drain(module, self.drain_timeout);
        }
        Ok(())
    }

    /// Reloads whenever the config file or a secret file it names holds
    /// other content, checked every `interval`. A content that was refused
    /// is tried again only when it, a secret file the refused config
    /// names, or the plugin directory changes (a missing secret or plugin
    /// arriving later).
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut refused: Option<Refused> = None;
        loop {
            tokio::time::sleep(interval).await;
            let current = self.current();
            let source = current.config.source.clone();
            let plugin_dir = current.plugin_dir.clone();
            let generation = current.generation.hash.clone();
            drop(current);
            let config_path = self.config_path.clone();
            let retry_files = refused.as_ref().map(|refused| refused.secret_files.clone());
            let looked = tokio::task::spawn_blocking(move || {
                let changed = source.current_hash() != generation;
                let again = retry_files.map(|files| {
                    (
                        config::current_hash(&config_path, &files),
                        plugins::directory_stamp(&plugin_dir),
                    )
                });
                (changed, again, plugin_dir)
            })
            .await;
            let Ok((changed, again, plugin_dir)) = looked else {
                continue;
            };
            if !changed {
                continue;
            }
            if let (Some(refused), Some((hash, stamp))) = (&refused, &again) {
                if refused.hash == *hash && refused.plugins == *stamp {
                    continue;
                }
            }
            match self.reload_when("config file changed", true).await {
                Ok(()) => refused = None,
                Err(failure) => {
                    let secret_files = failure
                        .refused_source
                        .as_ref()
                        .map(|source| source.secret_files.clone())
                        .unwrap_or_default();
                    let path = self.config_path.clone();
                    let stamp_of = plugin_dir.clone();
                    let files = secret_files.clone();
                    let Ok((hash, plugins)) = tokio::task::spawn_blocking(move || {
                        (
                            config::current_hash(&path, &files),
                            plugins::directory_stamp(&stamp_of),
                        )
                    })
                    .await
                    else {
                        continue;
                    };
                    refused = Some(Refused {
                        hash,
                        secret_files,
                        plugins,
                    });
                }
            }
        }
    }

    /// Shuts the modules of the generation serving down, once no reload
    /// is running (a reload finishing later would start instances nobody
    /// stops).
    pub async fn shut_down(&self) {
        let _no_reload = self.reloading.lock().await;
        let last = self.current();
        let _ = tokio::task::spawn_blocking(move || last.shutdown_modules_except(None)).await;
    }

    /// Reloads on every `SIGHUP`.
    #[cfg(unix)]
    pub async fn reload_on_hangup(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload by editing the config file");
            return;
        };
        while hangups.recv().await.is_some() {
            let _ = self.reload("SIGHUP").await;
        }
    }
}

/// What makes a built generation unfit to replace `old`, though it built:
/// a module that would stop running (its plugin missing, refused or
/// failing), or a warning the running config does not have (an unknown
/// key is usually a typo an operator would rather hear about now).
fn refusal(old: &Runtime, new: &Runtime) -> Vec<ConfigIssue> {
    let mut problems = Vec::new();
    let was_unavailable: BTreeSet<&str> = old
        .registry
        .modules
        .unavailable
        .iter()
        .map(|module| module.name.as_str())
        .collect();
    for module in &new.registry.modules.unavailable {
        if !was_unavailable.contains(module.name.as_str()) {
            problems.push(ConfigIssue {
                path: format!("delegation.modules.{}", module.name),
                message: module.reason.clone(),
            });
        }
    }
    for warning in &new.warnings {
        if !old.warnings.contains(warning) {
            problems.push(ConfigIssue {
                path: warning.path.clone(),
                message: format!("{} (a reload refuses new warnings)", warning.message),
            });
        }
    }
    problems
}

fn same_authenticator(old: &Runtime, new: &Runtime) -> bool {
    match (&old.authenticator, &new.authenticator) {
        (Some(old), Some(new)) => Arc::ptr_eq(old, new),
        _ => false,
    }
}

/// Shuts a removed module down once nothing but this holds it (the old
/// generation's last request finished), or after `timeout`. Its resources
/// (a database pool) are freed when the last reference goes.
fn drain(module: Arc<ModuleHandle>, timeout: Duration) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        while Arc::strong_count(&module) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if Arc::strong_count(&module) > 1 {
            tracing::warn!(module = %module.name, "calls still running after the drain timeout; shutting the removed module down anyway");
        }
        tracing::info!(module = %module.name, "removed module drained; shutting it down");
        module.shutdown();
    });
}
