//! The FFI-stable types. Changing anything in here (other than adding fields
//! after a `last_prefix_field`) changes the ABI: see docs/plugin-abi.md for
//! the compatibility rule.

// abi_stable 0.11's `#[sabi_trait]` expands to impls inside a const block, which
// newer compilers flag; the code is the macro's, not ours.
#![allow(non_local_definitions)]
// SAFETY: abi_stable's derive and `#[sabi_trait]` macros expand to `unsafe
// impl StableAbi` and unsafe vtable code; abi_stable checks those layouts
// at load time. This module holds no hand-written unsafe code.
#![allow(unsafe_code)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString},
    StableAbi,
};

/// Severity of a log record sent from a plugin to the host.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Signature of the host's log sink: `(level, target, message)`.
pub type LogFn = extern "C" fn(LogLevel, RStr<'_>, RStr<'_>);

/// What the host lends a plugin instance. Plain function pointers only: the
/// host outlives every plugin (libraries are never unloaded).
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostServices {
    /// Where the plugin's `tracing` events go (see `log_bridge`).
    pub log: extern "C" fn(LogLevel, RStr<'_>, RStr<'_>),
    /// The most verbose level the host will record; the plugin drops the
    /// rest before formatting them.
    pub max_log_level: LogLevel,
    /// Only exists in the ABI-compatibility test build: it changes this
    /// struct's layout so that the host must refuse the plugin.
    #[cfg(feature = "abi-break-test")]
    pub abi_break_test: u64,
}

impl HostServices {
    pub fn new(log: LogFn, max_log_level: LogLevel) -> Self {
        Self {
            log,
            max_log_level,
            #[cfg(feature = "abi-break-test")]
            abi_break_test: 0,
        }
    }
}

/// One configured module (for example `postgresql1`), created by
/// [`PluginModule::new_instance`]. All methods may be called from several
/// host threads at once, always from blocking threads, never from the async
/// runtime.
#[sabi_trait]
pub trait PluginInstance: Send + Sync {
    /// JSON array of [`crate::ToolSpec`]: the tools this instance serves,
    /// with names *without* the module prefix (the host adds it).
    fn tools_json(&self) -> RString;

    /// Runs one tool. `context_json` is a [`crate::CallContext`], `args_json`
    /// the tool arguments. Ok: the JSON structured result. Err: a JSON
    /// [`crate::ToolError`].
    fn call(
        &self,
        tool: RStr<'_>,
        context_json: RStr<'_>,
        args_json: RStr<'_>,
    ) -> RResult<RString, RString>;

    /// JSON [`crate::HealthReport`].
    fn health(&self) -> RString;

    /// Releases resources (pools, threads). Called once before the host exits.
    #[sabi(last_prefix_field)]
    fn shutdown(&self);
}

/// The owned, type-erased instance object the host holds.
pub type PluginInstanceBox = PluginInstance_TO<'static, RBox<()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// JSON [`crate::ModuleInfo`]: which module kind the plugin serves.
    pub info_json: extern "C" fn() -> RString,

    /// Checks one module entry's config (JSON) without connecting anywhere.
    /// Returns a JSON [`crate::ConfigReport`].
    pub validate_config: extern "C" fn(config_json: RStr<'_>) -> RString,

    /// Creates one instance. Must not block on the network: a database that
    /// is down must not stop the host from starting. Err: a readable message.
    #[sabi(last_prefix_field)]
    pub new_instance: extern "C" fn(
        instance_name: RStr<'_>,
        config_json: RStr<'_>,
        host: HostServices,
    ) -> RResult<PluginInstanceBox, RString>,

    /// Runs an operator command (`mcp-delegate db-setup` calls
    /// `"db-setup"`) for one module entry, without an instance. `args_json`
    /// is a JSON object; Ok: text to print; Err: a readable message.
    /// Added after the prefix: plugins built before it lack it, and the
    /// host checks for it (its accessor returns an `Option`).
    #[sabi(missing_field(option))]
    pub command: extern "C" fn(
        name: RStr<'_>,
        config_json: RStr<'_>,
        args_json: RStr<'_>,
    ) -> RResult<RString, RString>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "mcp_delegate_plugin";
    const NAME: &'static str = "mcp-delegate delegation module";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
