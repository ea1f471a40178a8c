//! Forwards a plugin's `tracing` events to the host.
//!
//! A cdylib has its own copy of tracing's global statics, so events emitted
//! inside a plugin would otherwise go nowhere. On the first `new_instance`
//! the plugin installs (in its own copy) a subscriber whose only layer hands
//! each event to the host's [`crate::abi::LogFn`].

use std::fmt::Write as _;
use std::sync::OnceLock;

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::abi::{HostServices, LogFn, LogLevel};

impl LogLevel {
    pub fn from_tracing(level: &Level) -> Self {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }
}

struct HostLogLayer {
    log: LogFn,
    max_level: LogLevel,
}

/// Renders an event's fields as `message key=value key=value`.
#[derive(Default)]
struct EventText(String);

impl Visit for EventText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }
}

impl<S: Subscriber> Layer<S> for HostLogLayer {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        LogLevel::from_tracing(metadata.level()) <= self.max_level
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = EventText::default();
        event.record(&mut text);
        let metadata = event.metadata();
        (self.log)(
            LogLevel::from_tracing(metadata.level()),
            RStr::from(metadata.target()),
            RStr::from(text.0.as_str()),
        );
    }
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the forwarding subscriber once per plugin library.
pub fn install(host: HostServices) {
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(HostLogLayer {
            log: host.log,
            max_level: host.max_log_level,
        });
        // Fails only if the plugin installed its own subscriber first; its
        // choice then stands.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}
