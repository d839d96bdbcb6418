//! The plugin host: loads driver plugins, runs one supervised instance per configured device,
//! turns what devices report into commands for the engine, and feeds printers and displays
//! from committed events.
//!
//! - **Loading** ([`load_plugin`]): each library is loaded once and never unloaded while the
//!   process runs. Its descriptor's `size`, then `abi_version`, are checked before any other
//!   call; a missing file, a non-library, a library without the entry symbol, an ABI mismatch
//!   and a refused device config each get their own clear error naming file and plugin.
//! - **Supervision**: a thread per device owns the plugin instance. A panic reported by the
//!   plugin (caught at the boundary), a `failed` message (e.g. a plugin thread panicked) or a
//!   refused `create` marks the device failed; it is destroyed and created again with
//!   exponential backoff (0.5 s doubling to 30 s). The queue keeps working meanwhile.
//! - **Emit** only copies the message into the device's own bounded channel ([`EMIT_QUEUE`]);
//!   when it is full the message is dropped and counted in the device's health, never
//!   blocking the plugin. Each device has a router task of its own that turns its messages,
//!   in order, into commands; devices do not wait for each other's commits.
//! - **One way in**: scanner codes become `check_in`, button presses become desk commands with
//!   the press's `event_id` as idempotency key, all through the same [`EngineHandle`].
//! - **Derived outputs**: printers get `print` jobs for `ticket_issued` events; displays get the
//!   latest calls (ticket and desk only, never personal data) after `ticket_called`/`recalled`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use leitsystem_plugin::messages::{
    ButtonAction, DeviceConfig, Paper, Role, decode_plugin_message, encode_host_message,
};
use leitsystem_plugin::{
    ABI_VERSION, ENTRY_SYMBOL, EntryFn, HostApi, HostMessage, LogLevel, PluginDescriptor,
    PluginMessage, ffi,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::daemon::EngineHandle;
use crate::domain::{
    BookingId, Command, CommandRequest, DeskId, Event, PrintOutcome, PrintState, Ticket,
    TicketNumber,
};

/// Messages from one device waiting for its router; beyond this, that device's emits are
/// dropped. Each device has its own queue and router, so a flooding device loses only its own
/// messages and delays only its own commands.
pub const EMIT_QUEUE: usize = 1024;
/// Messages waiting for one device's supervisor.
const DEVICE_QUEUE: usize = 64;
/// First restart delay; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A device running this long without failing starts its backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Why a plugin or device could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    /// No such file.
    #[error("{path}: file not found")]
    Missing {
        /// The file.
        path: String,
    },
    /// dlopen failed.
    #[error("{path}: not a loadable shared library: {reason}")]
    NotALibrary {
        /// The file.
        path: String,
        /// The loader's reason.
        reason: String,
    },
    /// No entry symbol.
    #[error("{path}: no entry symbol `{ENTRY_SYMBOL}`: not a Leitsystem plugin")]
    NoEntry {
        /// The file.
        path: String,
    },
    /// Built for another ABI.
    #[error(
        "{path}: plugin built for ABI version {found}, but this leitsystemd speaks ABI version {ABI_VERSION}"
    )]
    AbiMismatch {
        /// The file.
        path: String,
        /// Its ABI version.
        found: u32,
    },
    /// The descriptor is malformed.
    #[error("{path}: invalid plugin descriptor: {reason}")]
    BadDescriptor {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin does not offer the configured role.
    #[error("{path}: plugin '{plugin}' cannot be a {role} (it offers: {roles})")]
    RoleUnsupported {
        /// The file.
        path: String,
        /// Plugin name.
        plugin: String,
        /// Requested role.
        role: String,
        /// Offered roles.
        roles: String,
    },
    /// `create` refused the device config (or panicked).
    #[error("{path}: plugin '{plugin}' refused device '{device}': {reason}")]
    CreateFailed {
        /// The file.
        path: String,
        /// Plugin name.
        plugin: String,
        /// Device id.
        device: String,
        /// The plugin's reason.
        reason: String,
    },
}

/// A loaded plugin library (never unloaded).
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// Canonical file path.
    pub path: PathBuf,
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// ABI version it was built for.
    pub abi_version: u32,
    /// Roles it offers.
    pub roles: Vec<String>,
    descriptor: DescriptorRef,
}

/// The static descriptor of a loaded (never unloaded) library.
#[derive(Debug, Clone, Copy)]
struct DescriptorRef(&'static PluginDescriptor);

// SAFETY: the descriptor is immutable static data of a library that is never unloaded; its
// functions are callable from any thread per the ABI.
unsafe impl Send for DescriptorRef {}
// SAFETY: as above.
unsafe impl Sync for DescriptorRef {}

impl std::ops::Deref for DescriptorRef {
    type Target = PluginDescriptor;
    fn deref(&self) -> &PluginDescriptor {
        self.0
    }
}

fn loaded_plugins() -> &'static Mutex<HashMap<PathBuf, Result<LoadedPlugin, PluginError>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Result<LoadedPlugin, PluginError>>>> =
        OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Finds a plugin file: a path (absolute, or relative to the config file's directory) when it
/// contains a `/`, otherwise the first match in the search directories.
pub fn resolve_plugin(plugin: &str, dirs: &[PathBuf], config_dir: &Path) -> PathBuf {
    // `components()` drops inner `.` parts: `dir/./x.so` becomes `dir/x.so`.
    resolve_unnormalized(plugin, dirs, config_dir)
        .components()
        .collect()
}

fn resolve_unnormalized(plugin: &str, dirs: &[PathBuf], config_dir: &Path) -> PathBuf {
    if plugin.contains('/') {
        return config_dir.join(plugin);
    }
    dirs.iter()
        .map(|d| config_dir.join(d).join(plugin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            dirs.first().map_or_else(
                || config_dir.join(plugin),
                |d| config_dir.join(d).join(plugin),
            )
        })
}

/// Loads a plugin (once per file) and checks its descriptor before any other call.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, PluginError> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(PluginError::Missing { path: shown });
    }
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut cache = loaded_plugins()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(result) = cache.get(&key) {
        return result.clone();
    }
    let result = load_uncached(&key, shown);
    cache.insert(key, result.clone());
    result
}

fn load_uncached(path: &Path, shown: String) -> Result<LoadedPlugin, PluginError> {
    // SAFETY: loading a plugin runs its initialisers; plugins are trusted code installed by the
    // admin, and this is the documented way to load them. RTLD_NOW resolves every symbol now:
    // a plugin needing a function the system lacks is refused here with the symbol's name,
    // instead of aborting the daemon at its first call (lazy binding).
    let library = unsafe {
        libloading::os::unix::Library::open(
            Some(path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .map(libloading::Library::from)
    .map_err(|e| PluginError::NotALibrary {
        path: shown.clone(),
        // libloading's own text is only "dlopen failed"; the loader's words are its source.
        reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
    })?;
    // Never unloaded: a plugin's threads or statics may outlive any handle we could drop.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol is declared by the ABI with this type.
    let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }.map_err(|_| {
        PluginError::NoEntry {
            path: shown.clone(),
        }
    })?;
    // SAFETY: calling the entry is the first call the ABI allows; it returns a static pointer.
    let raw = unsafe { entry() };
    let bad = |reason: String| PluginError::BadDescriptor {
        path: shown.clone(),
        reason,
    };
    if raw.is_null() {
        return Err(bad("the entry returned no descriptor".to_string()));
    }
    // SAFETY: every ABI version starts with `size: u32, abi_version: u32`; read only those
    // before knowing the layout.
    let (size, abi_version) = unsafe {
        let words = raw.cast::<u32>();
        (std::ptr::read(words), std::ptr::read(words.add(1)))
    };
    if abi_version != ABI_VERSION {
        return Err(PluginError::AbiMismatch {
            path: shown,
            found: abi_version,
        });
    }
    if (size as usize) < std::mem::size_of::<PluginDescriptor>() {
        return Err(bad(format!(
            "{size} bytes, but ABI {ABI_VERSION} needs {}",
            std::mem::size_of::<PluginDescriptor>()
        )));
    }
    // SAFETY: size and version say the full v1 layout is there; it is static.
    let descriptor: &'static PluginDescriptor = unsafe { &*raw };
    let text = |ptr: *const c_char, what: &str| -> Result<String, PluginError> {
        if ptr.is_null() {
            return Err(bad(format!("no {what}")));
        }
        // SAFETY: the ABI requires NUL-terminated static strings.
        unsafe { CStr::from_ptr(ptr) }
            .to_str()
            .map(str::to_string)
            .map_err(|_| bad(format!("the {what} is not UTF-8")))
    };
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        name: text(descriptor.name, "name")?,
        version: text(descriptor.version, "version")?,
        abi_version,
        roles: text(descriptor.roles, "roles")?
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
        descriptor: DescriptorRef(descriptor),
    })
}

/// One configured device, resolved.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Device id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Desks it may act for (buttons); empty = any.
    pub desks: Vec<String>,
    /// The check-in terminal it belongs to (scanners, printers).
    pub terminal: Option<String>,
    /// Departments whose tickets it prints (printers); empty = any.
    pub departments: Vec<String>,
    /// The plugin file.
    pub plugin_path: PathBuf,
    /// Plugin options (JSON).
    pub options: serde_json::Value,
}

fn parse_role(role: &str) -> Option<Role> {
    Some(match role {
        "scanner" => Role::Scanner,
        "buttons" => Role::Buttons,
        "printer" => Role::Printer,
        "display" => Role::Display,
        _ => return None,
    })
}

/// Replaces `${data_dir}` in every string option.
fn substitute(value: serde_json::Value, data_dir: &str) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => {
            serde_json::Value::String(s.replace("${data_dir}", data_dir))
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(|v| substitute(v, data_dir)).collect())
        }
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, substitute(v, data_dir)))
                .collect(),
        ),
        other => other,
    }
}

/// The devices of a (validated) config. Plugin paths are resolved against `config_dir`;
/// `${data_dir}` in string options becomes the data directory.
pub fn device_specs(config: &Config, config_dir: &Path, data_dir: &Path) -> Vec<DeviceSpec> {
    let data_dir = data_dir.display().to_string();
    config
        .devices
        .iter()
        .filter_map(|d| {
            Some(DeviceSpec {
                id: d.id.get_ref().clone(),
                role: parse_role(d.role.get_ref())?,
                desks: d.desks.iter().map(|s| s.get_ref().clone()).collect(),
                terminal: d.terminal.as_ref().map(|t| t.get_ref().clone()),
                departments: d.departments.iter().map(|s| s.get_ref().clone()).collect(),
                plugin_path: resolve_plugin(d.plugin.get_ref(), &config.plugins.dirs, config_dir),
                options: substitute(
                    serde_json::to_value(&d.options).unwrap_or(serde_json::Value::Null),
                    &data_dir,
                ),
            })
        })
        .collect()
}

/// Where a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Being created.
    Starting,
    /// Created and working.
    Running,
    /// Failed; restarting after a backoff.
    Failed,
    /// The plugin could not be loaded; not retried until the daemon restarts.
    NotLoaded,
    /// Stopped at shutdown.
    Stopped,
    /// A call into the plugin has not returned for [`STUCK_AFTER`]: the device gets no
    /// messages meanwhile (they queue, then are dropped), and a stop does not wait for it.
    Stuck,
}

/// A plugin call running longer than this marks its device [`DeviceState::Stuck`].
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// How long a stop waits for the devices' threads in all; a thread still in a plugin call
/// then is left behind (it ends with the process), so shutdown stays within systemd's
/// `TimeoutStopSec`.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// The plugin call a device's thread is in, if any: (since, which call).
#[derive(Debug, Clone, Default)]
struct CallWatch(Arc<Mutex<Option<(Instant, &'static str)>>>);

impl CallWatch {
    /// Runs `call` (named `what`) marked as a plugin call.
    fn around<T>(&self, what: &'static str, call: impl FnOnce() -> T) -> T {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), what));
        let result = call();
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    fn current(&self) -> Option<(Instant, &'static str)> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks devices whose plugin call has not returned for [`STUCK_AFTER`] as stuck (logged once)
/// and running again when the call returns.
async fn watch_calls(
    watches: Vec<(String, CallWatch)>,
    registry: DeviceRegistry,
    shutdown: CancellationToken,
) {
    let mut stuck: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (id, watch) in &watches {
            match watch.current() {
                Some((since, what)) if since.elapsed() >= STUCK_AFTER => {
                    if stuck.insert(id.clone()) {
                        let message = format!(
                            "the plugin's `{what}` has not returned for {} s",
                            since.elapsed().as_secs()
                        );
                        tracing::error!(device = %id, "{message}; the device gets no messages until it does");
                        update(&registry, id, |h| {
                            h.state = DeviceState::Stuck;
                            h.last_error = Some(message);
                        });
                    }
                }
                Some(_) => {}
                None => {
                    if stuck.remove(id) {
                        tracing::info!(device = %id, "the plugin call returned; the device works again");
                        update(&registry, id, |h| {
                            if h.state == DeviceState::Stuck {
                                h.state = DeviceState::Running;
                            }
                        });
                    }
                }
            }
        }
    }
}

/// Health of one device, for the admin, the web and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// Device id.
    pub id: String,
    /// Role.
    pub role: String,
    /// Plugin file.
    pub plugin_file: String,
    /// Plugin name and version, once loaded.
    pub plugin: Option<String>,
    /// State.
    pub state: DeviceState,
    /// Whether the device reports a connection (scanner client, printer link).
    pub connected: Option<bool>,
    /// Printer paper level: `ok`, `near_end` (warn the admin) or `out`.
    pub paper: Option<String>,
    /// Printer cover open.
    pub cover_open: Option<bool>,
    /// Tickets printed since the daemon started.
    pub printed: u64,
    /// Print jobs that failed since the daemon started.
    pub print_failures: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Restarts since the daemon started.
    pub restarts: u32,
    /// Messages dropped because the host's queue was full.
    pub dropped_messages: u64,
}

/// Device health by device id, shared with the control socket (and later the web).
pub type DeviceRegistry = Arc<Mutex<BTreeMap<String, DeviceHealth>>>;

fn update(registry: &DeviceRegistry, id: &str, change: impl FnOnce(&mut DeviceHealth)) {
    let mut map = registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(health) = map.get_mut(id) {
        change(health);
    }
}

struct DeviceEvent {
    device: Arc<str>,
    bytes: Vec<u8>,
}

/// Where one instance's emits go.
struct EmitTarget {
    device: Arc<str>,
    tx: mpsc::Sender<DeviceEvent>,
    dropped: Arc<AtomicU64>,
}

/// Live instances' emit targets by handle. The `ctx` handed to a plugin is such a handle, not
/// a pointer: a plugin that (wrongly) emits after `destroy`, e.g. from a thread it failed to
/// stop, finds no target and its message is dropped, instead of touching freed memory
/// (measured: with a pointer this crashed the daemon with SIGSEGV).
fn emit_targets() -> &'static std::sync::RwLock<HashMap<usize, EmitTarget>> {
    static TARGETS: OnceLock<std::sync::RwLock<HashMap<usize, EmitTarget>>> = OnceLock::new();
    TARGETS.get_or_init(|| std::sync::RwLock::new(HashMap::new()))
}

static NEXT_EMIT_HANDLE: AtomicU64 = AtomicU64::new(1);

unsafe extern "C" fn host_emit(ctx: *mut c_void, message: *const u8, len: usize) {
    let _ = std::panic::catch_unwind(|| {
        if message.is_null() || len > leitsystem_plugin::messages::MAX_MESSAGE_BYTES {
            return;
        }
        let handle = ctx as usize;
        let targets = emit_targets()
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(target) = targets.get(&handle) else {
            return;
        };
        // SAFETY: the plugin passes `len` readable bytes; we copy them before returning.
        let bytes = unsafe { std::slice::from_raw_parts(message, len) }.to_vec();
        let event = DeviceEvent {
            device: target.device.clone(),
            bytes,
        };
        if target.tx.try_send(event).is_err() {
            target.dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
}

enum Supervise {
    Deliver(HostMessage),
    Restart(String),
    Stop,
}

struct Instance {
    plugin: LoadedPlugin,
    raw: *mut c_void,
    emit_handle: usize,
    _api: Box<HostApi>,
}

fn error_text(buffer: &[c_char]) -> String {
    // SAFETY: the buffer is zero-initialised and the plugin writes a NUL-terminated string
    // within it; the last byte stays NUL.
    unsafe { CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl Instance {
    fn create(
        plugin: &LoadedPlugin,
        spec: &DeviceSpec,
        tx: &mpsc::Sender<DeviceEvent>,
        dropped: &Arc<AtomicU64>,
    ) -> Result<Instance, (i32, String)> {
        let emit_handle = NEXT_EMIT_HANDLE.fetch_add(1, Ordering::Relaxed) as usize;
        emit_targets()
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                emit_handle,
                EmitTarget {
                    device: Arc::from(spec.id.as_str()),
                    tx: tx.clone(),
                    dropped: dropped.clone(),
                },
            );
        let api = Box::new(HostApi {
            size: std::mem::size_of::<HostApi>() as u32,
            abi_version: ABI_VERSION,
            // An opaque handle, deliberately not a pointer (see `emit_targets`).
            ctx: emit_handle as *mut c_void,
            emit: host_emit,
        });
        let config = serde_json::to_vec(&DeviceConfig {
            v: leitsystem_plugin::messages::MESSAGE_VERSION,
            id: spec.id.clone(),
            role: spec.role,
            desks: spec.desks.clone(),
            options: spec.options.clone(),
        })
        .unwrap_or_default();
        let mut raw = std::ptr::null_mut();
        let mut err = [0 as c_char; 512];
        // SAFETY: valid buffers; `api` and `context` live as long as the instance.
        let code = unsafe {
            (plugin.descriptor.create)(
                config.as_ptr(),
                config.len(),
                &*api,
                &mut raw,
                err.as_mut_ptr(),
                err.len() - 1,
            )
        };
        if code != ffi::OK || raw.is_null() {
            unregister_emit(emit_handle);
            return Err((code, error_text(&err)));
        }
        Ok(Instance {
            plugin: plugin.clone(),
            raw,
            emit_handle,
            _api: api,
        })
    }

    fn send(&self, message: &HostMessage) -> Result<(), (i32, String)> {
        let body = encode_host_message(message);
        let mut err = [0 as c_char; 512];
        // SAFETY: a live instance of this plugin; valid buffers.
        let code = unsafe {
            (self.plugin.descriptor.send)(
                self.raw,
                body.as_ptr(),
                body.len(),
                err.as_mut_ptr(),
                err.len() - 1,
            )
        };
        if code == ffi::OK {
            Ok(())
        } else {
            Err((code, error_text(&err)))
        }
    }
}

fn unregister_emit(handle: usize) {
    emit_targets()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&handle);
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: created by this plugin's create, destroyed exactly once.
        unsafe { (self.plugin.descriptor.destroy)(self.raw) };
        unregister_emit(self.emit_handle);
    }
}

/// Checks a device as `leitsystemd plugins` does: load and role, then (with `create`: no
/// daemon holds the devices) create and destroy it.
pub fn probe_device(spec: &DeviceSpec, create: bool) -> Result<LoadedPlugin, PluginError> {
    let plugin = load_plugin(&spec.plugin_path)?;
    check_role(&plugin, spec)?;
    if !create {
        return Ok(plugin);
    }
    let (tx, _rx) = mpsc::channel(EMIT_QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    match Instance::create(&plugin, spec, &tx, &dropped) {
        Ok(instance) => {
            drop(instance);
            Ok(plugin)
        }
        Err((_, reason)) => Err(PluginError::CreateFailed {
            path: spec.plugin_path.display().to_string(),
            plugin: plugin.name,
            device: spec.id.clone(),
            reason,
        }),
    }
}

fn check_role(plugin: &LoadedPlugin, spec: &DeviceSpec) -> Result<(), PluginError> {
    if plugin.roles.iter().any(|r| r == spec.role.as_str()) {
        Ok(())
    } else {
        Err(PluginError::RoleUnsupported {
            path: spec.plugin_path.display().to_string(),
            plugin: plugin.name.clone(),
            role: spec.role.as_str().to_string(),
            roles: plugin.roles.join(", "),
        })
    }
}

/// A message that carries a whole state (not a job): only its latest one matters.
fn is_state_message(message: &HostMessage) -> bool {
    matches!(
        message,
        HostMessage::Display { .. } | HostMessage::Desks { .. }
    )
}

fn supervise(
    plugin: LoadedPlugin,
    spec: DeviceSpec,
    inbox: Receiver<Supervise>,
    events: mpsc::Sender<DeviceEvent>,
    registry: DeviceRegistry,
    watch: CallWatch,
) {
    let dropped = Arc::new(AtomicU64::new(0));
    let mut backoff = FIRST_BACKOFF;
    let path = spec.plugin_path.display().to_string();
    // The latest state message of each kind (display state, desk lights): a restarted
    // instance gets them first, so it does not wait for the next change to show the present.
    let mut latest_states: BTreeMap<&'static str, HostMessage> = BTreeMap::new();
    loop {
        update(&registry, &spec.id, |h| h.state = DeviceState::Starting);
        let created = watch.around("create", || {
            Instance::create(&plugin, &spec, &events, &dropped)
        });
        let failure = match created {
            Err((code, reason)) => {
                let what = if code == ffi::PANICKED {
                    "panicked"
                } else {
                    "refused"
                };
                tracing::error!(device = %spec.id, plugin = %plugin.name, file = %path, "create {what}: {reason}");
                reason
            }
            Ok(instance) => {
                update(&registry, &spec.id, |h| {
                    h.state = DeviceState::Running;
                    h.plugin = Some(format!("{} {}", plugin.name, plugin.version));
                });
                tracing::info!(device = %spec.id, plugin = %plugin.name, role = spec.role.as_str(), "device running");
                let started = Instant::now();
                let mut pending: std::collections::VecDeque<HostMessage> =
                    latest_states.values().cloned().collect();
                let failure = loop {
                    let dropped_now = dropped.load(Ordering::Relaxed);
                    update(&registry, &spec.id, |h| h.dropped_messages = dropped_now);
                    let next = match pending.pop_front() {
                        Some(message) => Ok(Supervise::Deliver(message)),
                        None => inbox.recv_timeout(Duration::from_secs(1)),
                    };
                    match next {
                        Ok(Supervise::Deliver(message)) => {
                            if is_state_message(&message) {
                                latest_states.insert(message.kind(), message.clone());
                            }
                            match watch.around("send", || instance.send(&message)) {
                                Ok(()) => {}
                                Err((code, reason)) if code == ffi::PANICKED => break reason,
                                Err((_, reason)) => {
                                    tracing::warn!(device = %spec.id, "message refused: {reason}");
                                    update(&registry, &spec.id, |h| h.last_error = Some(reason));
                                }
                            }
                        }
                        Ok(Supervise::Restart(reason)) => break reason,
                        Ok(Supervise::Stop) | Err(RecvTimeoutError::Disconnected) => {
                            watch.around("destroy", || drop(instance));
                            update(&registry, &spec.id, |h| h.state = DeviceState::Stopped);
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            if started.elapsed() >= HEALTHY_AFTER {
                                backoff = FIRST_BACKOFF;
                            }
                        }
                    }
                };
                tracing::error!(device = %spec.id, plugin = %plugin.name, "device failed: {failure}");
                watch.around("destroy", || drop(instance));
                failure
            }
        };
        update(&registry, &spec.id, |h| {
            h.state = DeviceState::Failed;
            h.last_error = Some(failure.clone());
            h.restarts += 1;
        });
        // Wait out the backoff, but stop at once when asked.
        let until = Instant::now() + backoff;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match inbox.recv_timeout(left) {
                Ok(Supervise::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    update(&registry, &spec.id, |h| h.state = DeviceState::Stopped);
                    return;
                }
                Ok(Supervise::Deliver(message)) if is_state_message(&message) => {
                    latest_states.insert(message.kind(), message);
                }
                Ok(Supervise::Deliver(_)) => {
                    tracing::warn!(device = %spec.id, "device is restarting; a message was not delivered");
                }
                Ok(Supervise::Restart(_)) | Err(RecvTimeoutError::Timeout) => {}
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The running devices.
pub struct PluginHost {
    devices: Vec<(
        DeviceSpec,
        SyncSender<Supervise>,
        std::thread::JoinHandle<()>,
    )>,
    registry: DeviceRegistry,
    scans: crate::kiosk::ScanFeed,
}

/// Now in ms since the epoch (the wall clock; scan results only).
fn now_millis() -> i64 {
    crate::clock::Clock::now(&crate::clock::SystemClock)
}

impl PluginHost {
    /// Loads every configured device's plugin and starts the ones that load; the others are
    /// reported (file, plugin, reason) and marked `not_loaded`. Spawns the router and the
    /// output tasks on the current tokio runtime.
    pub fn start(
        specs: Vec<DeviceSpec>,
        catalog: Arc<Catalog>,
        engine: EngineHandle,
        display: tokio::sync::watch::Receiver<Arc<crate::display::PublicDisplay>>,
        print_answer_timeout: Duration,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> PluginHost {
        let started_at = now_millis();
        // Subscribed before anything is printed: every ticket issued from now on is seen.
        let committed = engine.feed();
        let registry: DeviceRegistry = Arc::new(Mutex::new(BTreeMap::new()));
        // One queue per device, each with a router task of its own.
        let mut queues: HashMap<String, mpsc::Receiver<DeviceEvent>> = HashMap::new();
        let mut devices = Vec::new();
        let mut watches = Vec::new();
        for spec in specs {
            registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(
                    spec.id.clone(),
                    DeviceHealth {
                        id: spec.id.clone(),
                        role: spec.role.as_str().to_string(),
                        plugin_file: spec.plugin_path.display().to_string(),
                        plugin: None,
                        state: DeviceState::Starting,
                        connected: None,
                        paper: None,
                        cover_open: None,
                        printed: 0,
                        print_failures: 0,
                        last_error: None,
                        restarts: 0,
                        dropped_messages: 0,
                    },
                );
            let loaded = load_plugin(&spec.plugin_path).and_then(|p| {
                check_role(&p, &spec)?;
                Ok(p)
            });
            let plugin = match loaded {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(device = %spec.id, "device not started: {e}");
                    update(&registry, &spec.id, |h| {
                        h.state = DeviceState::NotLoaded;
                        h.last_error = Some(e.to_string());
                    });
                    continue;
                }
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(DEVICE_QUEUE);
            let thread_spec = spec.clone();
            let (thread_events, device_events) = mpsc::channel(EMIT_QUEUE);
            queues.insert(spec.id.clone(), device_events);
            let thread_registry = registry.clone();
            let watch = CallWatch::default();
            let thread_watch = watch.clone();
            match std::thread::Builder::new()
                .name(format!("device-{}", spec.id))
                .spawn(move || {
                    supervise(
                        plugin,
                        thread_spec,
                        rx,
                        thread_events,
                        thread_registry,
                        thread_watch,
                    )
                }) {
                Ok(thread) => {
                    watches.push((spec.id.clone(), watch));
                    devices.push((spec, tx, thread));
                }
                Err(e) => tracing::error!(device = %spec.id, "cannot start its thread: {e}"),
            }
        }
        let host = PluginHost {
            devices,
            registry,
            scans: crate::kiosk::scan_feed(),
        };
        tracker.spawn(watch_calls(
            watches,
            host.registry.clone(),
            shutdown.clone(),
        ));
        let outputs = host.outputs();
        let printers = PrintRouting::new(&host.devices);
        let ledger = PrintLedger::default();
        let router = Arc::new(Router {
            catalog: catalog.clone(),
            engine: engine.clone(),
            registry: host.registry.clone(),
            scans: host.scans.clone(),
            ledger: ledger.clone(),
            // All printers at start: failures recorded before a restart are durable.
            failures_outstanding: Arc::new(Mutex::new(
                host.devices
                    .iter()
                    .filter(|(spec, _, _)| spec.role == Role::Printer)
                    .map(|(spec, _, _)| spec.id.clone())
                    .collect(),
            )),
        });
        for (spec, supervisor, _) in &host.devices {
            if let Some(events) = queues.remove(&spec.id) {
                tracker.spawn(route_device(
                    router.clone(),
                    spec.clone(),
                    supervisor.clone(),
                    events,
                    shutdown.clone(),
                ));
            }
        }
        tracker.spawn(watch_overdue_prints(router, shutdown.clone()));
        let displays = outputs
            .iter()
            .filter(|(role, _, _)| *role == Role::Display)
            .map(|(_, id, tx)| (id.clone(), tx.clone()))
            .collect();
        tracker.spawn(feed_displays(display, displays, shutdown.clone()));
        let lighted: Vec<crate::desk_lights::LightedDevice> = host
            .devices
            .iter()
            .filter(|(spec, _, _)| spec.role == Role::Buttons)
            .map(|(spec, _, _)| crate::desk_lights::LightedDevice {
                id: spec.id.clone(),
                desks: spec.desks.clone(),
            })
            .collect();
        let buttons: HashMap<String, SyncSender<Supervise>> = outputs
            .iter()
            .filter(|(role, _, _)| *role == Role::Buttons)
            .map(|(_, id, tx)| (id.clone(), tx.clone()))
            .collect();
        tracker.spawn(crate::desk_lights::feed(
            engine.clone(),
            lighted,
            move |id: &str, message: HostMessage| {
                if let Some(tx) = buttons.get(id)
                    && tx.try_send(Supervise::Deliver(message)).is_err()
                {
                    tracing::warn!(device = %id, "device queue full; desk lights not delivered");
                }
            },
            shutdown.clone(),
        ));
        tracker.spawn(derive_outputs(
            committed,
            engine.clone(),
            printers,
            ledger,
            print_answer_timeout,
            started_at,
            catalog,
            shutdown,
        ));
        host
    }

    /// Device health, shared.
    pub fn registry(&self) -> DeviceRegistry {
        self.registry.clone()
    }

    /// Waits (at most `timeout`) until every device has made its first attempt to start:
    /// running, failed (and retrying) or not loaded. Returns the ids still starting.
    pub async fn first_attempts(&self, timeout: Duration) -> Vec<String> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let starting: Vec<String> = self
                .registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .values()
                .filter(|h| h.state == DeviceState::Starting)
                .map(|h| h.id.clone())
                .collect();
            if starting.is_empty() || tokio::time::Instant::now() >= until {
                return starting;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The outcome of every scan (checked in or refused, with the kiosk's texts).
    pub fn scans(&self) -> crate::kiosk::ScanFeed {
        self.scans.clone()
    }

    fn outputs(&self) -> Vec<(Role, String, SyncSender<Supervise>)> {
        self.devices
            .iter()
            .filter(|(spec, _, _)| {
                matches!(spec.role, Role::Printer | Role::Display | Role::Buttons)
            })
            .map(|(spec, tx, _)| (spec.role, spec.id.clone(), tx.clone()))
            .collect()
    }

    /// Stops every device (destroying its instance) and waits for the supervisors.
    pub fn stop(self) {
        for (_, tx, _) in &self.devices {
            let _ = tx.try_send(Supervise::Stop);
        }
        let deadline = Instant::now() + STOP_WAIT;
        for (spec, tx, thread) in self.devices {
            drop(tx);
            // Bounded: a thread stuck in a plugin call must not hold up the shutdown.
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !thread.is_finished() {
                tracing::error!(
                    device = %spec.id,
                    "the device's thread is still in a plugin call; stopping without it"
                );
                continue;
            }
            if thread.join().is_err() {
                tracing::error!(device = %spec.id, "supervisor ended abnormally");
            }
        }
    }
}

fn button_command(action: ButtonAction, desk: DeskId) -> Command {
    match action {
        ButtonAction::Next => Command::CallNext { desk },
        ButtonAction::Recall => Command::Recall { desk },
        ButtonAction::Start => Command::StartService { desk },
        ButtonAction::Finish => Command::Finish { desk },
        ButtonAction::NoShow => Command::NoShow { desk },
        ButtonAction::Park => Command::Park { desk },
        ButtonAction::Resume => Command::ResumeAtDesk { desk, ticket: None },
        ButtonAction::Open => Command::OpenDesk { desk },
        ButtonAction::Pause => Command::PauseDesk { desk },
        ButtonAction::Close => Command::CloseDesk { desk },
        ButtonAction::Alarm => Command::SilentAlarm { desk },
    }
}

/// Turns device reports into engine commands and health updates.
/// What a scanned code asks for. With token keys configured, a signed token (verified here,
/// before anything looks at the store) checks in even before its booking arrived; a plain
/// booking id only when unsigned codes are accepted.
fn scanned_command(code: &str, catalog: &Catalog) -> Result<Command, (&'static str, String)> {
    if code.is_empty() || code.len() > crate::token::MAX_INPUT_BYTES {
        return Err((
            "not_a_code",
            format!("a code of {} bytes is no check-in code", code.len()),
        ));
    }
    if !catalog.token_keys.is_empty() {
        match crate::token::verify(code, &catalog.site_id, &catalog.token_keys) {
            Ok(claims) => {
                return Ok(Command::CheckInWithToken {
                    slot_start: claims.slot_start(&catalog.calendar),
                    booking: claims.booking,
                    service: claims.service,
                    version: claims.version,
                });
            }
            Err(crate::token::TokenError::NoToken) if catalog.accept_unsigned => {}
            Err(crate::token::TokenError::NoToken) => {
                return Err((
                    "unsigned",
                    "no signed check-in code found, and unsigned codes are not accepted".into(),
                ));
            }
            Err(e) => return Err((e.code(), format!("{} ({})", e, e.code()))),
        }
    }
    if !catalog.accept_unsigned {
        return Err(("unsigned", "unsigned codes are not accepted".to_string()));
    }
    Ok(Command::CheckIn {
        booking: BookingId::new(code),
    })
}

/// What the devices' routers share.
struct Router {
    catalog: Arc<Catalog>,
    engine: EngineHandle,
    registry: DeviceRegistry,
    scans: crate::kiosk::ScanFeed,
    ledger: PrintLedger,
    /// Printers that may have an open ticket waiting for a reprint. A printer joins with every
    /// failed print and leaves after a reprint scan; a successful print scans only then, so
    /// printing a ticket never copies the whole day.
    failures_outstanding: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// One device's router: its messages in order, each turned into a command and awaited, while
/// the other devices' routers go on. Inputs of several devices thus reach the engine together
/// and share a group commit; one slow commit holds up only the device that asked for it.
async fn route_device(
    router: Arc<Router>,
    spec: DeviceSpec,
    supervisor: SyncSender<Supervise>,
    mut events: mpsc::Receiver<DeviceEvent>,
    shutdown: CancellationToken,
) {
    // The last readiness this printer reported: becoming ready reprints failed tickets.
    let mut printer_ready: Option<bool> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Some(e) => e,
                None => return,
            },
        };
        router
            .handle(&spec, &supervisor, &mut printer_ready, event)
            .await;
    }
}

/// Jobs no printer answered: lost on the way (a full queue, a restarting driver, a printer
/// switched off). Recorded failed once a second, so they are reprinted.
async fn watch_overdue_prints(router: Arc<Router>, shutdown: CancellationToken) {
    let mut overdue_check = tokio::time::interval(Duration::from_secs(1));
    overdue_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = overdue_check.tick() => {}
        }
        for (job, printer, waited) in router.ledger.take_overdue() {
            let reason = format!("no answer from the printer within {} s", waited.as_secs());
            tracing::warn!(device = %printer, job = %job, "{reason}");
            update(&router.registry, &printer, |h| {
                h.print_failures += 1;
                h.last_error = Some(format!("print {job}: {reason}"));
            });
            record_print(
                &router.engine,
                &printer,
                &job,
                PrintOutcome::Failed { reason },
            )
            .await;
            router.set_failures_outstanding(&printer, true);
        }
    }
}

impl Router {
    fn failures_outstanding(&self, printer: &str) -> bool {
        self.failures_outstanding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(printer)
    }

    fn set_failures_outstanding(&self, printer: &str, outstanding: bool) {
        let mut set = self
            .failures_outstanding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if outstanding {
            set.insert(printer.to_string());
        } else {
            set.remove(printer);
        }
    }

    /// One message of device `spec`: a command for the engine, a health update, or a log line.
    async fn handle(
        &self,
        spec: &DeviceSpec,
        supervisor: &SyncSender<Supervise>,
        printer_ready: &mut Option<bool>,
        event: DeviceEvent,
    ) {
        let id = event.device.to_string();
        let message = match decode_plugin_message(&event.bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(device = %id, "malformed message from the plugin: {e}");
                return;
            }
        };
        let command = match message {
            PluginMessage::Scanned { code } if spec.role == Role::Scanner => {
                match scanned_command(code.trim(), &self.catalog) {
                    Ok(command) => Some((None, command)),
                    Err((code, reason)) => {
                        tracing::warn!(device = %id, "scanned code refused: {reason}");
                        let _ = self
                            .scans
                            .send(crate::kiosk::refused(code, &id, now_millis()));
                        return;
                    }
                }
            }
            PluginMessage::Button {
                desk,
                action,
                event_id,
            } if spec.role == Role::Buttons => {
                if !spec.desks.is_empty() && !spec.desks.contains(&desk) {
                    tracing::warn!(device = %id, desk = %desk, "button for a desk this device is not bound to");
                    return;
                }
                Some((
                    Some(format!("{id}:{event_id}")),
                    button_command(action, DeskId::new(desk)),
                ))
            }
            PluginMessage::Connection { connected, detail } => {
                tracing::info!(device = %id, connected, detail = detail.as_deref().unwrap_or(""), "connection");
                update(&self.registry, &id, |h| h.connected = Some(connected));
                if !connected {
                    // Unplugged: once it is back and ready, failed tickets are reprinted.
                    *printer_ready = Some(false);
                }
                None
            }
            PluginMessage::PrintDone { job } => {
                tracing::info!(device = %id, job = %job, "printed");
                self.ledger.answered(&job);
                update(&self.registry, &id, |h| h.printed += 1);
                let recorded = record_print(&self.engine, &id, &job, PrintOutcome::Printed).await;
                if recorded
                    && self.failures_outstanding(&id)
                    && reprint_failed(&self.engine, &id).await
                {
                    self.set_failures_outstanding(&id, false);
                }
                None
            }
            PluginMessage::PrintFailed { job, reason } => {
                tracing::warn!(device = %id, job = %job, "print failed: {reason}");
                self.ledger.answered(&job);
                update(&self.registry, &id, |h| {
                    h.print_failures += 1;
                    h.last_error = Some(format!("print {job} failed: {reason}"))
                });
                record_print(&self.engine, &id, &job, PrintOutcome::Failed { reason }).await;
                self.set_failures_outstanding(&id, true);
                None
            }
            PluginMessage::PrinterStatus {
                paper,
                cover_open,
                online,
            } => {
                let ready = online && !cover_open && paper != Paper::Out;
                let was_ready = printer_ready.replace(ready);
                match paper {
                    Paper::NearEnd => {
                        tracing::warn!(device = %id, "paper nearly used up: put in a new roll soon")
                    }
                    Paper::Out => tracing::warn!(device = %id, "paper out"),
                    Paper::Ok => {}
                }
                if cover_open {
                    tracing::warn!(device = %id, "printer cover open");
                }
                let paper = serde_json::to_value(paper)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
                update(&self.registry, &id, |h| {
                    h.paper = paper;
                    h.cover_open = Some(cover_open);
                    h.connected = Some(online && !cover_open);
                });
                if ready
                    && was_ready != Some(true)
                    && self.failures_outstanding(&id)
                    && reprint_failed(&self.engine, &id).await
                {
                    self.set_failures_outstanding(&id, false);
                }
                None
            }
            PluginMessage::Failed { reason } => {
                let _ = supervisor.try_send(Supervise::Restart(reason));
                None
            }
            PluginMessage::Log { level, message } => {
                match level {
                    LogLevel::Debug => tracing::debug!(device = %id, "{message}"),
                    LogLevel::Info => tracing::info!(device = %id, "{message}"),
                    LogLevel::Warn => tracing::warn!(device = %id, "{message}"),
                    LogLevel::Error => tracing::error!(device = %id, "{message}"),
                }
                None
            }
            other => {
                tracing::warn!(device = %id, role = spec.role.as_str(), "message not expected from this role: {other:?}");
                None
            }
        };
        if let Some((request_id, command)) = command {
            let request = CommandRequest {
                request_id,
                source: format!("{}:{id}", spec.role.as_str()),
                command,
            };
            let name = request.command.name();
            let scanned = spec.role == Role::Scanner;
            match self.engine.execute(request).await {
                Ok(executed) if scanned => {
                    // The kiosk shows every scan's outcome.
                    if let Some(result) =
                        crate::kiosk::accepted(&executed.outcome, &self.catalog, &id, now_millis())
                    {
                        let _ = self.scans.send(result);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(device = %id, command = name, "refused: {e}");
                    if scanned {
                        let _ = self
                            .scans
                            .send(crate::kiosk::refused(e.code(), &id, now_millis()));
                    }
                }
            }
        }
    }
}

/// Print job ids are `<day>/<call number>/<log sequence of the event that asked for it>`:
/// unique per attempt, and they name the ticket without a lookup.
fn print_job_id(ticket: &Ticket, seq: u64) -> String {
    format!("{}/{}/{seq}", ticket.day, ticket.number)
}

fn ticket_of_job(job: &str) -> Option<TicketNumber> {
    let mut parts = job.split('/');
    let (_day, number, _seq) = (parts.next()?, parts.next()?, parts.next()?);
    (!number.is_empty()).then(|| TicketNumber::new(number.to_string()))
}

/// Records a printer's outcome through the engine (one way in: it becomes an event).
/// True when recorded.
async fn record_print(
    engine: &EngineHandle,
    printer: &str,
    job: &str,
    outcome: PrintOutcome,
) -> bool {
    let Some(ticket) = ticket_of_job(job) else {
        tracing::warn!(device = %printer, job = %job, "print report for a job id the daemon did not issue");
        return false;
    };
    let request = CommandRequest {
        request_id: Some(format!("print:{job}")),
        source: format!("printer:{printer}"),
        command: Command::RecordPrint {
            ticket,
            printer: printer.to_string(),
            outcome,
        },
    };
    engine.execute(request).await.is_ok()
}

/// Asks for a reprint of every open ticket of today whose last print failed: the printer is
/// (back) in order, and the visitor still has no paper ticket. True when the scan ran (every
/// failed open ticket was asked for), false when the state could not be read.
async fn reprint_failed(engine: &EngineHandle, printer: &str) -> bool {
    let Ok(view) = engine.state_view().await else {
        return false;
    };
    for ticket in view.tickets {
        // One print state per printer: only the tickets this printer failed to print.
        let PrintState::Failed {
            at, printer: by, ..
        } = &ticket.print
        else {
            continue;
        };
        if by != printer {
            continue;
        }
        if ticket.state.is_final() {
            continue;
        }
        tracing::info!(device = %printer, ticket = %ticket.number, "printer ready again: reprinting");
        let request = CommandRequest {
            request_id: Some(format!("reprint:{}:{at}", ticket.number)),
            source: format!("printer:{printer}"),
            command: Command::Reprint {
                ticket: ticket.number.clone(),
            },
        };
        let _ = engine.execute(request).await;
    }
    true
}

/// Print jobs sent and not yet answered: job id -> (printer, when it is overdue, timeout).
#[derive(Debug, Clone, Default)]
struct PrintLedger {
    jobs: Arc<Mutex<HashMap<String, SentJob>>>,
}

/// A job sent: (printer, when it is overdue, its timeout).
type SentJob = (String, Instant, Duration);

impl PrintLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SentJob>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `job` went to `printer`, which must answer within `timeout`.
    fn sent(&self, job: &str, printer: &str, timeout: Duration) {
        self.lock().insert(
            job.to_string(),
            (printer.to_string(), Instant::now() + timeout, timeout),
        );
    }

    /// The printer answered `job` (printed or failed).
    fn answered(&self, job: &str) {
        self.lock().remove(job);
    }

    /// Removes and returns the jobs past their time: (job, printer, how long it waited).
    fn take_overdue(&self) -> Vec<(String, String, Duration)> {
        let now = Instant::now();
        let mut jobs = self.lock();
        let overdue: Vec<String> = jobs
            .iter()
            .filter(|(_, (_, due, _))| *due <= now)
            .map(|(job, _)| job.clone())
            .collect();
        overdue
            .into_iter()
            .filter_map(|job| {
                jobs.remove(&job)
                    .map(|(printer, _, timeout)| (job, printer, timeout))
            })
            .collect()
    }
}

/// One printer as the print routing sees it.
#[derive(Debug, Clone)]
struct PrinterRoute {
    id: String,
    terminal: Option<String>,
    departments: Vec<String>,
    tx: SyncSender<Supervise>,
}

/// Which printer prints which ticket: exactly one per ticket.
#[derive(Debug, Clone, Default)]
struct PrintRouting {
    /// In config order.
    printers: Vec<PrinterRoute>,
    /// Scanner device id -> its terminal.
    scanner_terminals: HashMap<String, String>,
}

impl PrintRouting {
    fn new(
        devices: &[(
            DeviceSpec,
            SyncSender<Supervise>,
            std::thread::JoinHandle<()>,
        )],
    ) -> Self {
        let mut routing = Self::default();
        for (spec, tx, _) in devices {
            match spec.role {
                Role::Printer => routing.printers.push(PrinterRoute {
                    id: spec.id.clone(),
                    terminal: spec.terminal.clone(),
                    departments: spec.departments.clone(),
                    tx: tx.clone(),
                }),
                Role::Scanner => {
                    if let Some(terminal) = &spec.terminal {
                        routing
                            .scanner_terminals
                            .insert(spec.id.clone(), terminal.clone());
                    }
                }
                _ => {}
            }
        }
        routing
    }

    /// The printer for a ticket of `department` issued by the input `source`: the printer of
    /// the issuing scanner's terminal; else the first printer bound to the department; else
    /// the first printer bound to no department and no terminal; else the first printer.
    fn printer_for(&self, source: &str, department: Option<&str>) -> Option<&PrinterRoute> {
        let terminal = source
            .strip_prefix("scanner:")
            .and_then(|scanner| self.scanner_terminals.get(scanner));
        let at_terminal = terminal.and_then(|terminal| {
            self.printers
                .iter()
                .find(|p| p.terminal.as_ref() == Some(terminal))
        });
        at_terminal
            .or_else(|| {
                self.printers
                    .iter()
                    .find(|p| department.is_some_and(|d| p.departments.iter().any(|pd| pd == d)))
            })
            .or_else(|| {
                self.printers
                    .iter()
                    .find(|p| p.departments.is_empty() && p.terminal.is_none())
            })
            .or_else(|| self.printers.first())
    }

    fn by_id(&self, id: &str) -> Option<&PrinterRoute> {
        self.printers.iter().find(|p| p.id == id)
    }
}

/// Printers, fed from committed events: a ticket issued or to be reprinted becomes a print
/// job for one printer ([`PrintRouting`]; a reprint goes to the printer that failed it).
/// Every job is entered in the ledger, so one that is never answered counts as failed.
/// At start, open tickets that never got an answer before the daemon stopped are reprinted.
#[allow(clippy::too_many_arguments)]
async fn derive_outputs(
    mut committed: crate::daemon::EventFeed,
    engine: EngineHandle,
    printers: PrintRouting,
    ledger: PrintLedger,
    print_answer_timeout: Duration,
    started_at: i64,
    catalog: Arc<Catalog>,
    shutdown: CancellationToken,
) {
    let department_of = |ticket: &Ticket| {
        catalog
            .services
            .get(&ticket.service)
            .map(|s| s.department.as_str().to_string())
    };
    if !printers.printers.is_empty() {
        reprint_unanswered(&engine, started_at).await;
    }
    loop {
        let record = tokio::select! {
            _ = shutdown.cancelled() => return,
            record = committed.recv() => record,
        };
        let Some(record) = record else {
            return;
        };
        let job = match &record.event {
            Event::TicketIssued { ticket } => printers
                .printer_for(&record.source, department_of(ticket).as_deref())
                .map(|printer| (ticket.clone(), printer)),
            Event::ReprintRequested { ticket, printer } => match engine.state_view().await {
                Ok(view) => view
                    .tickets
                    .into_iter()
                    .find(|t| &t.number == ticket)
                    .and_then(|t| {
                        // The event names the printer of the last outcome (the ticket's print
                        // state is pending again by now).
                        let earlier = printer.as_deref().and_then(|p| printers.by_id(p));
                        earlier
                            .or_else(|| printers.printer_for("", department_of(&t).as_deref()))
                            .map(|printer| (t, printer))
                    }),
                Err(e) => {
                    tracing::warn!(ticket = %ticket, "cannot read the ticket to reprint: {e}");
                    None
                }
            },
            _ => None,
        };
        let Some((ticket, printer)) = job else {
            continue;
        };
        let id = print_job_id(&ticket, record.seq);
        let message = HostMessage::Print {
            job: id.clone(),
            document: crate::ticket::ticket_document(&ticket, &catalog, record.at),
        };
        if printer.tx.try_send(Supervise::Deliver(message)).is_err() {
            // Not delivered: recorded as failed at once, and reprinted when the printer is
            // ready again.
            tracing::warn!(device = %printer.id, job = %id, "printer queue full; print job not delivered");
            record_print(
                &engine,
                &printer.id,
                &id,
                PrintOutcome::Failed {
                    reason: "the printer's queue is full".to_string(),
                },
            )
            .await;
        } else {
            ledger.sent(&id, &printer.id, print_answer_timeout);
        }
    }
}

/// Open tickets issued before this start whose print never got an answer (the daemon stopped
/// between committing the ticket and the printer's report): reprinted, so no visitor is left
/// without paper because of a restart.
async fn reprint_unanswered(engine: &EngineHandle, started_at: i64) {
    let Ok(view) = engine.state_view().await else {
        return;
    };
    for ticket in view.tickets {
        if ticket.print != PrintState::Pending
            || ticket.state.is_final()
            || ticket.issued_at >= started_at
        {
            continue;
        }
        tracing::warn!(ticket = %ticket.number, "no print outcome was recorded before the restart: reprinting");
        let request = CommandRequest {
            request_id: Some(format!("reprint-unanswered:{}:{started_at}", ticket.number)),
            source: "printer:restart".to_string(),
            command: Command::Reprint {
                ticket: ticket.number.clone(),
            },
        };
        let _ = engine.execute(request).await;
    }
}

/// Displays get the public display state ([`crate::display`]) whenever it changes.
async fn feed_displays(
    mut display: tokio::sync::watch::Receiver<Arc<crate::display::PublicDisplay>>,
    displays: Vec<(String, SyncSender<Supervise>)>,
    shutdown: CancellationToken,
) {
    loop {
        let state = serde_json::to_value(&**display.borrow_and_update()).unwrap_or_default();
        for (id, tx) in &displays {
            let message = HostMessage::Display {
                state: state.clone(),
            };
            if tx.try_send(Supervise::Deliver(message)).is_err() {
                tracing::warn!(device = %id, "device queue full; display state not delivered");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = display.changed() => if changed.is_err() { return },
        }
    }
}
