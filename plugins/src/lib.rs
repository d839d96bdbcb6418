//! The Leitsystem plugin SDK.
//!
//! Hardware drivers are shared libraries loaded by `leitsystemd` at run time. This crate holds
//! everything both sides agree on:
//! - the **C ABI** ([`PluginDescriptor`], [`HostApi`], [`ENTRY_SYMBOL`], [`ABI_VERSION`]),
//!   mirrored in `include/leitsystem_plugin.h` for drivers written in C;
//! - the **messages** crossing the boundary, versioned JSON ([`messages`]);
//! - a safe **[`Driver`] trait** plus [`export_plugin!`], so a Rust driver is a few dozen lines
//!   and never lets a panic unwind across the boundary.
//!
//! Rules a plugin lives by (see `plugins/README.md`): it owns its threads (use [`Host::spawn`],
//! which reports a panic as a device failure); tokio's runtime context does not reach into a
//! loaded library, so a driver needing async I/O runs its own runtime on its own thread;
//! [`Host::emit`] never blocks; the library is never unloaded while the daemon runs.
//!
//! With the cargo feature `testing`, [`testing`] is the host-side harness drivers' tests use:
//! it loads a built plugin as the daemon does and collects what each device emits.

pub mod document;
pub mod messages;
#[cfg(feature = "testing")]
pub mod testing;

use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

pub use messages::{DeviceConfig, HostMessage, LogLevel, PluginMessage};

/// Version of the ABI described here. The host refuses a plugin built for another one.
pub const ABI_VERSION: u32 = 1;

/// Name of the one symbol every plugin exports (`extern "C" fn() -> *const PluginDescriptor`).
pub const ENTRY_SYMBOL: &str = "leitsystem_plugin_entry";

/// The entry symbol's type.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

/// Called by a plugin, from any thread, to hand one JSON message to the host.
pub type EmitFn = unsafe extern "C" fn(ctx: *mut c_void, message: *const u8, len: usize);

/// What the host passes to `create`; valid until `destroy` returns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostApi {
    /// `size_of::<HostApi>()` as the host knows it.
    pub size: u32,
    /// The host's ABI version.
    pub abi_version: u32,
    /// Opaque host context, passed back to `emit`.
    pub ctx: *mut c_void,
    /// Thread-safe, non-blocking message sink.
    pub emit: EmitFn,
}

/// Creates an instance: config JSON in, instance out; 0 on success, else a reason in `err`.
pub type CreateFn = unsafe extern "C" fn(
    config: *const u8,
    config_len: usize,
    host: *const HostApi,
    instance: *mut *mut c_void,
    err: *mut c_char,
    err_cap: usize,
) -> i32;

/// Delivers one JSON message to an instance; 0 when accepted, else a reason in `err`.
pub type SendFn = unsafe extern "C" fn(
    instance: *mut c_void,
    message: *const u8,
    len: usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32;

/// Stops an instance's threads and frees it.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// The plugin's self-description, returned by the entry symbol. Checked by the host before any
/// other call: `size` first (the ABI grows only at the end), then `abi_version`.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDescriptor {
    /// `size_of::<PluginDescriptor>()` as the plugin knows it.
    pub size: u32,
    /// ABI version the plugin was built for.
    pub abi_version: u32,
    /// NUL-terminated UTF-8 name.
    pub name: *const c_char,
    /// NUL-terminated UTF-8 version.
    pub version: *const c_char,
    /// NUL-terminated, comma-separated roles (`scanner`, `buttons`, `printer`, `display`).
    pub roles: *const c_char,
    /// See [`CreateFn`].
    pub create: CreateFn,
    /// See [`SendFn`].
    pub send: SendFn,
    /// See [`DestroyFn`].
    pub destroy: DestroyFn,
}

/// A descriptor that may live in a `static` (it only points to static data).
#[repr(transparent)]
#[derive(Debug)]
pub struct StaticDescriptor(pub PluginDescriptor);

// SAFETY: the descriptor only holds pointers to static, immutable strings and functions.
unsafe impl Sync for StaticDescriptor {}

/// The plugin's handle to the host: emit messages, log, spawn supervised threads.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    api: HostApi,
}

// SAFETY: the ABI requires `emit` to be callable from any thread with the given context.
unsafe impl Send for Host {}
// SAFETY: as above; `emit` only copies the message.
unsafe impl Sync for Host {}

impl Host {
    /// Wraps the host API handed to `create`.
    ///
    /// # Safety
    /// `api` must point to a valid [`HostApi`] that stays valid until the instance is destroyed.
    pub unsafe fn from_raw(api: *const HostApi) -> Result<Host, String> {
        if api.is_null() {
            return Err("the host passed no host API".to_string());
        }
        // SAFETY: non-null and valid per the caller's contract; read only the first, fixed
        // fields after checking the size the host announces.
        let size = unsafe { (*api).size } as usize;
        if size < std::mem::size_of::<HostApi>() {
            return Err(format!("the host API is {size} bytes, too small"));
        }
        // SAFETY: as above, and the struct is at least as large as ours.
        let api = unsafe { *api };
        Ok(Host { api })
    }

    /// Sends a message to the host. Never blocks; the host drops messages when its queue is
    /// full (and counts them).
    pub fn emit(&self, message: &PluginMessage) {
        let body = messages::encode_plugin_message(message);
        // SAFETY: emit is thread-safe and copies the bytes before returning (ABI contract).
        unsafe { (self.api.emit)(self.api.ctx, body.as_ptr(), body.len()) }
    }

    /// Logs through the host (ends up in the daemon's journal with the device id).
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.emit(&PluginMessage::Log {
            level,
            message: message.into(),
        });
    }

    /// Spawns a named plugin thread. A panic in it does not unwind anywhere: it is caught and
    /// reported to the host as [`PluginMessage::Failed`], which restarts the device.
    pub fn spawn<F>(&self, name: &str, work: F) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let host = *self;
        let thread_name = name.to_string();
        std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                if let Err(panic) = catch_unwind(AssertUnwindSafe(work)) {
                    host.emit(&PluginMessage::Failed {
                        reason: format!(
                            "thread '{thread_name}' panicked: {}",
                            panic_message(&*panic)
                        ),
                    });
                }
            })
    }
}

/// A driver written in Rust. One value per configured device.
pub trait Driver: Send + 'static {
    /// Creates the device from its config; start threads with [`Host::spawn`]. An `Err` is
    /// shown to the admin (file, plugin, reason) and the device is not started.
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String>
    where
        Self: Sized;

    /// Handles one message from the host (print a ticket, show a display state, ...).
    fn handle(&mut self, message: HostMessage) -> Result<(), String>;

    /// Stops the device's threads; called once before the value is dropped.
    fn stop(&mut self) {}
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Writes `message` NUL-terminated into a caller's buffer, truncated at a UTF-8 boundary.
///
/// # Safety
/// `buffer` must be null or point to at least `capacity` writable bytes.
pub unsafe fn write_error(buffer: *mut c_char, capacity: usize, message: &str) {
    if buffer.is_null() || capacity == 0 {
        return;
    }
    let mut len = message.len().min(capacity - 1);
    while !message.is_char_boundary(len) {
        len -= 1;
    }
    // SAFETY: the caller guarantees `capacity` writable bytes; we write `len + 1 <= capacity`.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), buffer.cast::<u8>(), len);
        *buffer.add(len) = 0;
    }
}

/// The `extern "C"` functions behind [`export_plugin!`]: each one catches panics and turns
/// them into error codes, so nothing unwinds across the boundary.
pub mod ffi {
    use super::*;

    /// Return code: success.
    pub const OK: i32 = 0;
    /// Return code: the driver refused (bad config, bad message).
    pub const REFUSED: i32 = 1;
    /// Return code: the driver panicked (caught).
    pub const PANICKED: i32 = 2;
    /// Return code: the host broke the contract (null pointers, bad JSON).
    pub const BAD_CALL: i32 = 3;

    struct Instance<D> {
        driver: Mutex<D>,
    }

    fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: the host passes a pointer to `len` readable bytes (ABI contract).
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// A failed call: return code and reason.
    type Failure = (i32, String);

    /// Runs a driver call with panics caught: a refusal becomes [`REFUSED`], a panic
    /// [`PANICKED`] with "panicked {what}: ...".
    fn guarded<T>(what: &str, call: impl FnOnce() -> Result<T, String>) -> Result<T, Failure> {
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(reason)) => Err((REFUSED, reason)),
            Err(panic) => Err((
                PANICKED,
                format!("panicked {what}: {}", panic_message(&*panic)),
            )),
        }
    }

    /// Turns a result into the ABI's return code, writing the reason into the host's buffer.
    ///
    /// # Safety
    /// `err` must be null or point to `err_cap` writable bytes.
    unsafe fn report(result: Result<(), Failure>, err: *mut c_char, err_cap: usize) -> i32 {
        match result {
            Ok(()) => OK,
            Err((code, reason)) => {
                // SAFETY: per this function's contract.
                unsafe { write_error(err, err_cap, &reason) };
                code
            }
        }
    }

    fn bad_call(reason: impl Into<String>) -> Failure {
        (BAD_CALL, reason.into())
    }

    /// `create` for driver `D`.
    ///
    /// # Safety
    /// Called by the host per the ABI: valid pointers and lengths.
    pub unsafe extern "C" fn create<D: Driver>(
        config: *const u8,
        config_len: usize,
        host: *const HostApi,
        instance: *mut *mut c_void,
        err: *mut c_char,
        err_cap: usize,
    ) -> i32 {
        let result = (|| {
            if instance.is_null() {
                return Err(bad_call("no place for the instance"));
            }
            let config = bytes(config, config_len).ok_or_else(|| bad_call("no config"))?;
            let config: DeviceConfig = serde_json::from_slice(config)
                .map_err(|e| bad_call(format!("the config is not valid JSON: {e}")))?;
            // SAFETY: host validity per the ABI.
            let host = unsafe { Host::from_raw(host) }.map_err(bad_call)?;
            let driver = guarded("in create", || D::create(config, host))?;
            let boxed = Box::new(Instance {
                driver: Mutex::new(driver),
            });
            // SAFETY: checked non-null above.
            unsafe { *instance = Box::into_raw(boxed).cast::<c_void>() };
            Ok(())
        })();
        // SAFETY: err/err_cap come from the host per the ABI.
        unsafe { report(result, err, err_cap) }
    }

    /// `send` for driver `D`.
    ///
    /// # Safety
    /// Called by the host per the ABI with an instance from `create::<D>`.
    pub unsafe extern "C" fn send<D: Driver>(
        instance: *mut c_void,
        message: *const u8,
        len: usize,
        err: *mut c_char,
        err_cap: usize,
    ) -> i32 {
        let result = (|| {
            if instance.is_null() {
                return Err(bad_call("no instance"));
            }
            let message = bytes(message, len).ok_or_else(|| bad_call("no message"))?;
            let message = messages::decode_host_message(message).map_err(bad_call)?;
            // SAFETY: the instance was created by create::<D> and not yet destroyed.
            let instance = unsafe { &*instance.cast::<Instance<D>>() };
            guarded("handling a message", || {
                instance
                    .driver
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .handle(message)
            })
        })();
        // SAFETY: err/err_cap come from the host per the ABI.
        unsafe { report(result, err, err_cap) }
    }

    /// `destroy` for driver `D`.
    ///
    /// # Safety
    /// Called once by the host with an instance from `create::<D>`.
    pub unsafe extern "C" fn destroy<D: Driver>(instance: *mut c_void) {
        if instance.is_null() {
            return;
        }
        // SAFETY: created by Box::into_raw in create::<D>; the host destroys it once.
        let boxed = unsafe { Box::from_raw(instance.cast::<Instance<D>>()) };
        let _ = catch_unwind(AssertUnwindSafe(move || {
            let mut driver = boxed
                .driver
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            driver.stop();
        }));
    }
}

/// Exports a [`Driver`] as a plugin: defines the entry symbol and its static descriptor.
///
/// ```ignore
/// leitsystem_plugin::export_plugin!(MyDriver, name: "my-driver", version: "1.0.0",
///                                   roles: "scanner,printer");
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($driver:ty, name: $name:expr, version: $version:expr, roles: $roles:expr) => {
        /// The plugin's entry symbol.
        #[unsafe(no_mangle)]
        pub extern "C" fn leitsystem_plugin_entry() -> *const $crate::PluginDescriptor {
            static DESCRIPTOR: $crate::StaticDescriptor =
                $crate::StaticDescriptor($crate::PluginDescriptor {
                    size: ::std::mem::size_of::<$crate::PluginDescriptor>() as u32,
                    abi_version: $crate::ABI_VERSION,
                    name: concat!($name, "\0").as_ptr().cast(),
                    version: concat!($version, "\0").as_ptr().cast(),
                    roles: concat!($roles, "\0").as_ptr().cast(),
                    create: $crate::ffi::create::<$driver>,
                    send: $crate::ffi::send::<$driver>,
                    destroy: $crate::ffi::destroy::<$driver>,
                });
            &DESCRIPTOR.0
        }
    };
}
