//! Finds plugin libraries in a directory and loads each content once.
//!
//! We use `lib_header_from_path(..).init_root_module()` rather than
//! abi_stable's `load_from_file`: the latter caches one module per interface
//! type and would hand back the first plugin for every later path.
//!
//! Libraries are never unloaded (code of a running instance must stay
//! mapped, and abi_stable leaks them anyway). A library is loaded from its
//! own path the first time; when the file at that path later has other
//! content (a drop-in upgrade, by atomic rename), the new content is copied
//! to a private path named by its hash and loaded from there, because the
//! dynamic loader caches by path and would hand back the old image.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use abi_stable::std_types::RResult;
use mcp_delegate_plugin_api::{
    ConfigReport, HostServices, ModuleInfo, PluginInstanceBox, PluginModuleRef,
};
use serde_json::Value;

/// One loaded library image: module instances made from the same image
/// share it, and an instance is reused on reload only with the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LibraryId(u64);

/// One loaded plugin library.
pub struct LoadedPlugin {
    /// The file in the plugin directory it came from.
    pub path: PathBuf,
    pub id: LibraryId,
    pub info: ModuleInfo,
    module: PluginModuleRef,
}

impl LoadedPlugin {
    pub fn validate_config(&self, config: &Value) -> ConfigReport {
        let report = (self.module.validate_config())(config.to_string().as_str().into());
        serde_json::from_str(report.as_str()).unwrap_or_else(|err| ConfigReport {
            errors: vec![mcp_delegate_plugin_api::ConfigIssue {
                path: String::new(),
                message: format!("the plugin returned an unreadable config report: {err}"),
            }],
            warnings: vec![],
            concurrency: None,
            busy: None,
        })
    }

    pub fn new_instance(
        &self,
        instance_name: &str,
        config: &Value,
        host: HostServices,
    ) -> Result<PluginInstanceBox, String> {
        match (self.module.new_instance())(
            instance_name.into(),
            config.to_string().as_str().into(),
            host,
        ) {
            RResult::ROk(instance) => Ok(instance),
            RResult::RErr(message) => Err(message.into_string()),
        }
    }
}

impl LoadedPlugin {
    /// Runs an operator command for one module entry; a plugin built
    /// before commands existed says so.
    pub fn command(&self, name: &str, config: &Value, args: &Value) -> Result<String, String> {
        let Some(command) = self.module.command() else {
            return Err(format!(
                "the {} plugin ({}) predates operator commands; upgrade it",
                self.info.display_name,
                self.path.display()
            ));
        };
        match command(
            name.into(),
            config.to_string().as_str().into(),
            args.to_string().as_str().into(),
        ) {
            RResult::ROk(text) => Ok(text.into_string()),
            RResult::RErr(message) => Err(message.into_string()),
        }
    }
}

/// The plugins found, by module kind.
#[derive(Default)]
pub struct PluginSet {
    by_kind: BTreeMap<String, Arc<LoadedPlugin>>,
    /// Libraries that are plugins this host cannot use, and why.
    pub refused: Vec<RefusedLibrary>,
}

pub struct RefusedLibrary {
    pub path: PathBuf,
    pub reason: String,
}

impl PluginSet {
    pub fn get(&self, kind: &str) -> Option<&LoadedPlugin> {
        self.by_kind.get(kind).map(Arc::as_ref)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }
}

/// What a library file came to, remembered by the file's identity so a
/// reload does not read unchanged files again.
#[derive(Clone)]
enum Outcome {
    Plugin(Arc<LoadedPlugin>),
    NotAPlugin,
    Refused(String),
}

/// A file's identity as `stat` sees it: a rename or rewrite changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (metadata.dev(), metadata.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        Ok(Self {
            device,
            inode,
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// Every library this process has looked at. Process-wide because the
/// dynamic loader's cache is.
#[derive(Default)]
struct Libraries {
    by_path: HashMap<PathBuf, (FileIdentity, Outcome)>,
    /// Upgraded contents loaded from private copies, by SHA-256.
    by_hash: HashMap<String, Outcome>,
    next_id: u64,
}

static LIBRARIES: Mutex<Option<Libraries>> = Mutex::new(None);

impl Libraries {
    fn next_id(&mut self) -> LibraryId {
        self.next_id += 1;
        LibraryId(self.next_id)
    }

    /// The outcome for the library at `path`, loading it if it is new or
    /// its content changed.
    fn outcome(&mut self, path: &Path) -> Outcome {
        let identity = match FileIdentity::of(path) {
            Ok(identity) => identity,
            Err(err) => return Outcome::Refused(format!("cannot read it: {err}")),
        };
        let seen_before = match self.by_path.get(path) {
            Some((known, outcome)) if *known == identity => return outcome.clone(),
            Some(_) => true,
            None => false,
        };
        let (outcome, remember) = if seen_before {
            self.load_upgrade(path)
        } else {
            let id = self.next_id();
            (to_outcome(load_one(path, path, id)), true)
        };
        if remember {
            self.by_path
                .insert(path.to_path_buf(), (identity, outcome.clone()));
        }
        outcome
    }

    /// New content at a path loaded before: load it from a private copy
    /// named by its hash (once per content). `false`: an I/O failure, not
    /// to be remembered (the next reload tries again).
    fn load_upgrade(&mut self, path: &Path) -> (Outcome, bool) {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => return (Outcome::Refused(format!("cannot read it: {err}")), false),
        };
        let hash = crate::config::sha256_hex(&bytes);
        if let Some(outcome) = self.by_hash.get(&hash) {
            return (outcome.clone(), true);
        }
        let copy = match PrivateCopy::write(path, &hash, &bytes) {
            Ok(copy) => copy,
            Err(err) => {
                let reason = format!(
                    "cannot copy it to a private directory under {} to load it: {err}",
                    std::env::temp_dir().display()
                );
                return (Outcome::Refused(reason), false);
            }
        };
        let id = self.next_id();
        let outcome = to_outcome(load_one(&copy.file, path, id));
        self.by_hash.insert(hash, outcome.clone());
        (outcome, true)
    }
}

fn to_outcome(loaded: Result<Option<LoadedPlugin>, String>) -> Outcome {
    match loaded {
        Ok(Some(plugin)) => Outcome::Plugin(Arc::new(plugin)),
        Ok(None) => Outcome::NotAPlugin,
        Err(reason) => Outcome::Refused(reason),
    }
}

/// A copy of a library in a directory made for it: new, named
/// unpredictably, and writable by this user only (so nobody can swap the
/// file between writing and loading it). Removed again once loaded.
struct PrivateCopy {
    directory: PathBuf,
    file: PathBuf,
}

impl PrivateCopy {
    fn write(original: &Path, hash: &str, bytes: &[u8]) -> std::io::Result<Self> {
        use std::io::Write;
        let directory = fresh_private_directory()?;
        let extension = original
            .extension()
            .and_then(|ext| ext.to_str())
            .unwrap_or("so");
        let file = directory.join(format!("{hash}.{extension}"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o700);
        }
        let written = options.open(&file).and_then(|mut out| out.write_all(bytes));
        let copy = Self { directory, file };
        written.map(|()| copy)
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        // The loader keeps the mapping (and its cache entry by name); the
        // file itself is no longer needed.
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.directory);
    }
}

/// Creates a new directory (never one that exists: `create_dir` fails
/// then, and another name is tried) with mode 0700.
fn fresh_private_directory() -> std::io::Result<PathBuf> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    let mut last_error = None;
    for attempt in 0..16u32 {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let name = crate::config::sha256_hex(
            format!("{}:{nanos}:{attempt}", std::process::id()).as_bytes(),
        );
        let directory = std::env::temp_dir().join(format!("mcp-delegate-plugin-{}", &name[..24]));
        match builder.create(&directory) {
            Ok(()) => return Ok(directory),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no directory name left")))
}

/// A cheap fingerprint of the libraries in `dir` (names and file
/// identities, no content read): the reload watcher retries a refused
/// config when it changes.
pub fn directory_stamp(dir: &Path) -> String {
    let mut entries: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| is_library(path))
                .map(|path| format!("{}={:?}", path.display(), FileIdentity::of(&path).ok()))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries.join("\n")
}

/// The directory holding the running executable (`target/release` after a
/// `cargo build --release`, where the plugin libraries are built too).
pub fn default_plugin_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

fn is_library(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|ext| ext.to_str()),
        Some("so" | "dylib" | "dll")
    )
}

/// Loads every plugin library in `dir` (unchanged files: the image loaded
/// before). A library that is not a plugin is skipped quietly; one that is
/// refused is reported (error log, [`PluginSet::refused`]) and skipped: the
/// host keeps serving the modules of the other plugins.
pub fn discover(dir: &Path) -> PluginSet {
    let mut set = PluginSet::default();
    let mut libraries = LIBRARIES.lock().unwrap_or_else(PoisonError::into_inner);
    let libraries = libraries.get_or_insert_with(Libraries::default);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| is_library(path))
            .collect(),
        Err(err) => {
            tracing::error!(dir = %dir.display(), error = %err, "cannot read the plugin directory");
            return set;
        }
    };
    // Deterministic: if two libraries claim one kind, the first by name wins.
    paths.sort();
    for path in paths {
        match libraries.outcome(&path) {
            Outcome::Plugin(plugin) => {
                if let Some(existing) = set.by_kind.get(&plugin.info.kind) {
                    tracing::error!(
                        kind = %plugin.info.kind,
                        kept = %existing.path.display(),
                        ignored = %plugin.path.display(),
                        "two plugin libraries serve the same module kind; ignoring the second"
                    );
                    continue;
                }
                tracing::info!(
                    kind = %plugin.info.kind,
                    version = %plugin.info.version,
                    path = %plugin.path.display(),
                    "Loaded {} plugin", plugin.info.display_name
                );
                set.by_kind.insert(plugin.info.kind.clone(), plugin);
            }
            Outcome::NotAPlugin => {
                tracing::debug!(path = %path.display(), "not an mcp-delegate plugin; skipped");
            }
            Outcome::Refused(reason) => {
                tracing::error!(path = %path.display(), "plugin refused: {reason}");
                set.refused.push(RefusedLibrary { path, reason });
            }
        }
    }
    set
}

/// Loads the library at `load_path` (which holds the content of `path`).
/// `Ok(None)`: the file is a library but not an abi_stable plugin.
fn load_one(load_path: &Path, path: &Path, id: LibraryId) -> Result<Option<LoadedPlugin>, String> {
    let header = match lib_header_from_path(load_path) {
        Ok(header) => header,
        Err(LibraryError::GetSymbolError { .. }) => return Ok(None),
        Err(err) => return Err(summarise(&err)),
    };
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|err| summarise(&err))?;
    let info_text = (module.info_json())();
    let info: ModuleInfo = serde_json::from_str(info_text.as_str())
        .map_err(|err| format!("unreadable module info: {err}"))?;
    Ok(Some(LoadedPlugin {
        path: path.to_path_buf(),
        id,
        info,
        module,
    }))
}

/// abi_stable's layout-mismatch report runs to tens of kilobytes; keep the
/// lines that say what is wrong.
fn summarise(err: &LibraryError) -> String {
    let expected = PluginModuleRef::VERSION_STRINGS;
    let full = err.to_string();
    let mut key_lines: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("Error:") || line.contains("ncompatible version"))
        .collect();
    key_lines.dedup();
    key_lines.truncate(6);
    let detail = if key_lines.is_empty() {
        full.lines().next().unwrap_or("unknown error").to_owned()
    } else {
        key_lines.join("; ")
    };
    format!(
        "incompatible with this host's plugin-api {expected}: {detail} \
         (rebuild the plugin against a compatible mcp-delegate-plugin-api; see docs/plugin-abi.md)"
    )
}
