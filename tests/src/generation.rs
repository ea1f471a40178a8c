//! The configuration generation a running host serves, as `/ready` shows
//! it: for the reload tests.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::host::Host;

/// `/ready` as JSON.
pub fn ready(host: &Host) -> Value {
    host.get("/ready").1
}

/// When the generation serving was loaded.
pub fn loaded_at(status: &Value) -> String {
    status["config"]["loadedAt"]
        .as_str()
        .expect("loadedAt")
        .to_owned()
}

/// The modules `/ready` says are running, sorted.
pub fn running_modules(status: &Value) -> Vec<String> {
    let mut modules: Vec<String> = status["modules"]
        .as_array()
        .map(|modules| {
            modules
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    modules.sort_unstable();
    modules
}

/// Waits until `/ready` shows a generation loaded later than `previous`
/// (a `loadedAt`): a reload happened.
pub fn await_reload(host: &Host, previous: &str) -> Value {
    await_reload_of(host, previous, None)
}

/// As [`await_reload`], until the generation runs exactly `modules` (a
/// secret file written before the config may cause a reload of its own).
pub fn await_reload_of(host: &Host, previous: &str, modules: Option<&[&str]>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = ready(host);
        if loaded_at(&status) != previous
            && modules.is_none_or(|modules| running_modules(&status) == modules)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no reload within 30 s; /ready: {status}; log tail:\n{}",
            host.logs()
                .iter()
                .rev()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
