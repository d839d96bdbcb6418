//! The C ABI side of the plugin host, and all of its `unsafe`: loading a library and checking
//! its descriptor ([`load_plugin`]), the host API a plugin calls back (`host_emit`, looked up by
//! an opaque handle, so an emit after destroy is dropped), and one plugin instance's
//! create/send/destroy calls (`Instance`).

use super::DeviceSpec;
use leitsystem_plugin::messages::{DeviceConfig, encode_host_message};
use leitsystem_plugin::{
    ABI_VERSION, ENTRY_SYMBOL, EntryFn, HostApi, HostMessage, PluginDescriptor, ffi,
};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;

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
    pub(crate) descriptor: DescriptorRef,
}

/// The static descriptor of a loaded (never unloaded) library.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DescriptorRef(&'static PluginDescriptor);

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

pub(crate) fn loaded_plugins() -> &'static Mutex<HashMap<PathBuf, Result<LoadedPlugin, PluginError>>>
{
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

pub(crate) fn resolve_unnormalized(plugin: &str, dirs: &[PathBuf], config_dir: &Path) -> PathBuf {
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

pub(crate) fn load_uncached(path: &Path, shown: String) -> Result<LoadedPlugin, PluginError> {
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

pub(crate) struct DeviceEvent {
    pub(crate) device: Arc<str>,
    pub(crate) bytes: Vec<u8>,
}

/// Where one instance's emits go.
pub(crate) struct EmitTarget {
    pub(crate) device: Arc<str>,
    pub(crate) tx: mpsc::Sender<DeviceEvent>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// Live instances' emit targets by handle. The `ctx` handed to a plugin is such a handle, not
/// a pointer: a plugin that (wrongly) emits after `destroy`, e.g. from a thread it failed to
/// stop, finds no target and its message is dropped, instead of touching freed memory
/// (measured: with a pointer this crashed the daemon with SIGSEGV).
pub(crate) fn emit_targets() -> &'static std::sync::RwLock<HashMap<usize, EmitTarget>> {
    static TARGETS: OnceLock<std::sync::RwLock<HashMap<usize, EmitTarget>>> = OnceLock::new();
    TARGETS.get_or_init(|| std::sync::RwLock::new(HashMap::new()))
}

pub(crate) static NEXT_EMIT_HANDLE: AtomicU64 = AtomicU64::new(1);

pub(crate) unsafe extern "C" fn host_emit(ctx: *mut c_void, message: *const u8, len: usize) {
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

pub(crate) enum Supervise {
    Deliver(HostMessage),
    Restart(String),
    Stop,
}

pub(crate) struct Instance {
    pub(crate) plugin: LoadedPlugin,
    pub(crate) raw: *mut c_void,
    pub(crate) emit_handle: usize,
    pub(crate) _api: Box<HostApi>,
}

pub(crate) fn error_text(buffer: &[c_char]) -> String {
    // SAFETY: the buffer is zero-initialised and the plugin writes a NUL-terminated string
    // within it; the last byte stays NUL.
    unsafe { CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl Instance {
    pub(crate) fn create(
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

    pub(crate) fn send(&self, message: &HostMessage) -> Result<(), (i32, String)> {
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

pub(crate) fn unregister_emit(handle: usize) {
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
