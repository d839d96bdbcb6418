//! The harness every driver's tests use: load the built plugin as the daemon does.
//!
//! Behind the cargo feature `testing`; a driver enables it for its tests only:
//!
//! ```toml
//! [dev-dependencies]
//! leitsystem-plugin = { path = "../../plugins", features = ["testing"] }
//! ```
//!
//! - [`TestPlugin::load_built`] finds the driver's `.so` next to the running test binary
//!   (`cargo test -p <driver>` builds it first); [`TestPlugin::load`] takes any path. Like
//!   `leitsystemd`, it loads the library with libloading, calls the entry symbol and checks the
//!   descriptor (ABI version, size, UTF-8 name, version and roles) before anything else.
//! - [`TestPlugin::create`] makes one device through the descriptor's `create`. Each device gets
//!   its own [`HostApi`] whose `emit` decodes and collects what *that* device emits (its `ctx`
//!   points to the device's collector), so devices do not see each other's messages.
//! - A [`TestDevice`] sends host messages ([`TestDevice::send`], [`TestDevice::print`]), shows
//!   what it emitted ([`TestDevice::messages`]) and waits, bounded, for a message
//!   ([`TestDevice::wait_for`] after a [`TestDevice::mark`]; [`TestDevice::wait_until`] for
//!   conditions over all messages). [`TestDevice::destroy`] reports how long `destroy` took;
//!   dropping the device destroys it.
//!
//! Errors are `String`s meant for the test's failure output: a refusal is the plugin's reason
//! verbatim, a timeout lists every message the device emitted. A message that does not decode
//! is recorded (emit must not panic: it is called from the plugin's threads) and makes every
//! later wait fail. Like the daemon, the harness never unloads a library.

use std::ffi::{CStr, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::document::Document;
use crate::messages::{MESSAGE_VERSION, decode_plugin_message, encode_host_message};
use crate::{
    ABI_VERSION, ENTRY_SYMBOL, EntryFn, HostApi, HostMessage, PluginDescriptor, PluginMessage, ffi,
};

/// Size of the error buffers handed to `create` and `send` (as in the daemon).
const ERROR_CAPACITY: usize = 512;
/// How often a wait looks at the messages again.
const POLL: Duration = Duration::from_millis(5);

/// A plugin library loaded the way the daemon loads it. Never unloaded: a plugin's threads or
/// statics may outlive any handle.
#[derive(Debug)]
pub struct TestPlugin {
    path: PathBuf,
    descriptor: &'static PluginDescriptor,
    name: String,
    version: String,
    roles: String,
}

impl TestPlugin {
    /// Loads the plugin at `path` and checks its descriptor as the daemon does.
    pub fn load(path: &Path) -> Result<TestPlugin, String> {
        let shown = path.display();
        if !path.is_file() {
            return Err(format!("{shown}: file not found"));
        }
        // SAFETY: loading a plugin runs its initialisers; in a driver's tests that is the
        // driver's own freshly built library, which is what these tests are about.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("{shown}: not a loadable shared library: {e}"))?;
        // SAFETY: the ABI declares the entry symbol with this type. The function pointer is
        // copied out; it stays valid because the library is never unloaded (below).
        let entry: EntryFn = *unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }
            .map_err(|_| format!("{shown}: no entry symbol `{ENTRY_SYMBOL}`: not a plugin"))?;
        // SAFETY: calling the entry is the first call the ABI allows; it returns a pointer to a
        // static descriptor.
        let raw = unsafe { entry() };
        if raw.is_null() {
            return Err(format!("{shown}: the entry returned no descriptor"));
        }
        // SAFETY: every ABI version starts with `size: u32, abi_version: u32`; read only those
        // before knowing the layout.
        let (size, abi_version) = unsafe {
            let words = raw.cast::<u32>();
            (std::ptr::read(words), std::ptr::read(words.add(1)))
        };
        if abi_version != ABI_VERSION {
            return Err(format!(
                "{shown}: plugin built for ABI version {abi_version}, the SDK speaks {ABI_VERSION}"
            ));
        }
        if (size as usize) < std::mem::size_of::<PluginDescriptor>() {
            return Err(format!(
                "{shown}: descriptor of {size} bytes, but ABI {ABI_VERSION} needs {}",
                std::mem::size_of::<PluginDescriptor>()
            ));
        }
        // SAFETY: size and version say the full layout is there; the descriptor is static and
        // the library stays loaded for the rest of the process.
        let descriptor: &'static PluginDescriptor = unsafe { &*raw };
        let text = |ptr: *const c_char, what: &str| -> Result<String, String> {
            if ptr.is_null() {
                return Err(format!("{shown}: the descriptor has no {what}"));
            }
            // SAFETY: the ABI requires NUL-terminated static strings.
            unsafe { CStr::from_ptr(ptr) }
                .to_str()
                .map(str::to_string)
                .map_err(|_| format!("{shown}: the descriptor's {what} is not UTF-8"))
        };
        let plugin = TestPlugin {
            path: path.to_path_buf(),
            descriptor,
            name: text(descriptor.name, "name")?,
            version: text(descriptor.version, "version")?,
            roles: text(descriptor.roles, "roles")?,
        };
        // Never unloaded, as in the daemon: `descriptor` and the plugin's threads need it.
        std::mem::forget(library);
        Ok(plugin)
    }

    /// Loads `file_name` (e.g. `libleitsystem_sim.so`) from the target directory of the running
    /// test binary: `target/<profile>/deps/` or `target/<profile>/`, where cargo puts a
    /// package's `cdylib` when it builds the package's tests.
    pub fn load_built(file_name: &str) -> Result<TestPlugin, String> {
        let exe = std::env::current_exe().map_err(|e| format!("the test binary's path: {e}"))?;
        let deps = exe
            .parent()
            .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
        let mut candidates = vec![deps.join(file_name)];
        candidates.extend(deps.parent().map(|profile| profile.join(file_name)));
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(format!(
                "{file_name} is not built next to the tests (looked for {}): build the driver's \
                 cdylib first; `cargo test -p <the driver's package>` builds it before its tests",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        };
        TestPlugin::load(path)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin's descriptor (already checked: ABI version, size, strings).
    pub fn descriptor(&self) -> &PluginDescriptor {
        self.descriptor
    }

    /// The descriptor's name, e.g. `sim`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor's version, e.g. `1.0.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The descriptor's comma-separated roles, e.g. `scanner,buttons,printer,display`.
    pub fn roles(&self) -> &str {
        &self.roles
    }

    /// Creates a device from its full config (the `create` argument, e.g.
    /// `{"v":1,"id":"foyer","role":"printer","desks":[],"options":{..}}`). A refusal is `Err`
    /// with the plugin's reason verbatim; other failures name their return code.
    pub fn create(&self, config: serde_json::Value) -> Result<TestDevice<'_>, String> {
        let id = config
            .get("id")
            .and_then(|id| id.as_str())
            .unwrap_or("?")
            .to_string();
        let collector = Arc::new(Collector::default());
        let api = Box::new(HostApi {
            size: std::mem::size_of::<HostApi>() as u32,
            abi_version: ABI_VERSION,
            ctx: Arc::as_ptr(&collector).cast_mut().cast(),
            emit: collect,
        });
        let body = config.to_string();
        let mut err = [0 as c_char; ERROR_CAPACITY];
        let mut instance = std::ptr::null_mut();
        // SAFETY: valid config bytes, host API and buffers per the ABI; the API and the
        // collector its `ctx` points to live in the returned device until after `destroy`.
        let code = unsafe {
            (self.descriptor.create)(
                body.as_ptr(),
                body.len(),
                &*api,
                &mut instance,
                err.as_mut_ptr(),
                err.len() - 1,
            )
        };
        if code != ffi::OK {
            return Err(failure(code, &err));
        }
        if instance.is_null() {
            return Err(format!(
                "create of device '{id}' returned 0 but no instance"
            ));
        }
        Ok(TestDevice {
            plugin: self,
            id,
            instance,
            collector,
            _api: api,
            destroyed: false,
        })
    }

    /// Creates a device with no desks: `{"v":1,"id":id,"role":role,"desks":[],"options":..}`.
    pub fn create_device(
        &self,
        id: &str,
        role: &str,
        options: serde_json::Value,
    ) -> Result<TestDevice<'_>, String> {
        self.create(serde_json::json!({
            "v": MESSAGE_VERSION, "id": id, "role": role, "desks": [], "options": options,
        }))
    }
}

/// The reason in an error buffer, with the return code unless it is a plain refusal.
fn failure(code: i32, buffer: &[c_char]) -> String {
    let bytes: Vec<u8> = buffer
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    let reason = String::from_utf8_lossy(&bytes).into_owned();
    let reason = if reason.is_empty() {
        "(no reason given)".to_string()
    } else {
        reason
    };
    match code {
        ffi::REFUSED => reason,
        ffi::PANICKED => format!("{reason} (return code {code}: the driver panicked)"),
        ffi::BAD_CALL => format!("{reason} (return code {code}: the host broke the contract)"),
        _ => format!("{reason} (unknown return code {code})"),
    }
}

/// What one device emitted; its `HostApi::ctx` points here.
#[derive(Default)]
struct Collector {
    received: Mutex<Received>,
}

#[derive(Default)]
struct Received {
    messages: Vec<PluginMessage>,
    /// Messages that did not decode, with the reason.
    invalid: Vec<String>,
}

impl Collector {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The harness's `emit`: decodes and stores; never blocks for long, never panics.
unsafe extern "C" fn collect(ctx: *mut c_void, message: *const u8, len: usize) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: `ctx` is the device's collector, kept alive by its `TestDevice` until after
    // `destroy` returned, after which the plugin no longer calls `emit` (ABI contract).
    let collector = unsafe { &*ctx.cast::<Collector>() };
    let decoded = if message.is_null() {
        Err("a null message pointer".to_string())
    } else {
        // SAFETY: the plugin passes `len` readable bytes (ABI contract).
        decode_plugin_message(unsafe { std::slice::from_raw_parts(message, len) })
    };
    let mut received = collector.lock();
    match decoded {
        Ok(message) => received.messages.push(message),
        Err(reason) => received.invalid.push(reason),
    }
}

/// One device created by a [`TestPlugin`]; destroyed on drop.
pub struct TestDevice<'a> {
    plugin: &'a TestPlugin,
    id: String,
    instance: *mut c_void,
    collector: Arc<Collector>,
    _api: Box<HostApi>,
    destroyed: bool,
}

impl std::fmt::Debug for TestDevice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDevice")
            .field("plugin", &self.plugin.name)
            .field("id", &self.id)
            .field("destroyed", &self.destroyed)
            .finish_non_exhaustive()
    }
}

impl TestDevice<'_> {
    /// The device id from its config.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Delivers one message through the descriptor's `send`. A refusal is `Err` with the
    /// plugin's reason verbatim.
    pub fn send(&self, message: &HostMessage) -> Result<(), String> {
        if self.destroyed {
            return Err(format!("device '{}' is already destroyed", self.id));
        }
        let body = encode_host_message(message);
        let mut err = [0 as c_char; ERROR_CAPACITY];
        // SAFETY: a live instance of this plugin (not destroyed, checked above); valid message
        // bytes and error buffer.
        let code = unsafe {
            (self.plugin.descriptor.send)(
                self.instance,
                body.as_ptr(),
                body.len(),
                err.as_mut_ptr(),
                err.len() - 1,
            )
        };
        if code == ffi::OK {
            Ok(())
        } else {
            Err(failure(code, &err))
        }
    }

    /// Sends a `print` job.
    pub fn print(&self, job: &str, document: &Document) -> Result<(), String> {
        self.send(&HostMessage::Print {
            job: job.to_string(),
            document: document.clone(),
        })
    }

    /// Every message the device emitted so far, in order.
    pub fn messages(&self) -> Vec<PluginMessage> {
        self.collector.lock().messages.clone()
    }

    /// Emitted messages that did not decode, with the reason (should be none).
    pub fn invalid_messages(&self) -> Vec<String> {
        self.collector.lock().invalid.clone()
    }

    /// How many messages there are so far: [`TestDevice::wait_for`] from a mark looks only at
    /// newer ones.
    pub fn mark(&self) -> usize {
        self.collector.lock().messages.len()
    }

    /// Waits up to `timeout` until `found` returns something for the messages so far; returns
    /// it. The error names `what` and lists the messages seen.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&[PluginMessage]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let received = self.collector.lock();
                if !received.invalid.is_empty() {
                    return Err(format!(
                        "device '{}' emitted messages that do not decode (waiting for {what}): \
                         {:?}",
                        self.id, received.invalid
                    ));
                }
                if let Some(value) = found(&received.messages) {
                    return Ok(value);
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(format!(
                        "device '{}': no {what} within {timeout:?}; {} messages seen: {:?}",
                        self.id,
                        received.messages.len(),
                        received.messages
                    ));
                }
            }
            std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// Waits up to `timeout` for the device's first `connection` report with `connected: false`
    /// and returns its detail (a device created without its hardware must say why).
    pub fn wait_disconnected(&self, timeout: Duration) -> Result<String, String> {
        self.wait_until("a disconnected report", timeout, |messages| {
            messages.iter().find_map(|m| match m {
                PluginMessage::Connection {
                    connected: false,
                    detail,
                } => detail.clone(),
                _ => None,
            })
        })
    }

    /// Waits up to `timeout` for a message after the first `from` (see [`TestDevice::mark`])
    /// that satisfies `found`; returns it.
    pub fn wait_for(
        &self,
        from: usize,
        what: &str,
        timeout: Duration,
        found: impl Fn(&PluginMessage) -> bool,
    ) -> Result<PluginMessage, String> {
        self.wait_until(what, timeout, |messages| {
            messages.iter().skip(from).find(|m| found(m)).cloned()
        })
    }

    /// Calls the descriptor's `destroy` (once; later calls do nothing) and returns how long it
    /// took. Messages stay readable afterwards.
    pub fn destroy(&mut self) -> Duration {
        let started = Instant::now();
        if !self.destroyed {
            self.destroyed = true;
            // SAFETY: created by this plugin's `create`, destroyed exactly once.
            unsafe { (self.plugin.descriptor.destroy)(self.instance) };
        }
        started.elapsed()
    }
}

impl Drop for TestDevice<'_> {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// What [`conformance`] needs to know about one driver.
#[derive(Debug, Clone)]
pub struct Conformance {
    /// The plugin file (`libleitsystem_sim.so`), found as [`TestPlugin::load_built`] does.
    pub file_name: &'static str,
    /// The role the configs use.
    pub role: &'static str,
    /// `options` of a valid device (its device may be absent: then it must say so).
    pub valid: serde_json::Value,
    /// `options` the driver must refuse.
    pub invalid: serde_json::Value,
    /// The text the refusal must contain (the option it names).
    pub invalid_names: &'static str,
}

/// The contract every driver passes, as the daemon relies on it: the library loads with a
/// good descriptor listing `role`; an invalid config is refused with a reason naming the
/// option (never a panic, never a crash); the wrong role is refused; a valid one is created,
/// reports something (health or a log line) within 5 s, and is destroyed within 2 s; and
/// creating and destroying it three times in a row works (no thread or port left behind).
/// Returns what went wrong, one line per problem.
pub fn conformance(spec: &Conformance) -> Vec<String> {
    let mut problems = Vec::new();
    let plugin = match TestPlugin::load_built(spec.file_name) {
        Ok(p) => p,
        Err(e) => return vec![format!("{}: {e}", spec.file_name)],
    };
    let file = spec.file_name;
    if !plugin.roles().split(',').any(|r| r.trim() == spec.role) {
        problems.push(format!(
            "{file}: roles '{}' lack '{}'",
            plugin.roles(),
            spec.role
        ));
    }
    if plugin.name().is_empty() || plugin.version().is_empty() {
        problems.push(format!("{file}: empty name or version"));
    }
    let config = |role: &str, options: &serde_json::Value| {
        serde_json::json!({"v": MESSAGE_VERSION, "id": "conformance", "role": role,
                           "desks": ["1"], "options": options})
    };
    match plugin.create(config(spec.role, &spec.invalid)) {
        Ok(_) => problems.push(format!(
            "{file}: accepted the invalid options {}",
            spec.invalid
        )),
        Err(reason) if reason.contains("panic") => {
            problems.push(format!("{file}: panicked on invalid options: {reason}"));
        }
        Err(reason) if !reason.contains(spec.invalid_names) => problems.push(format!(
            "{file}: the refusal of {} does not name '{}': {reason}",
            spec.invalid, spec.invalid_names
        )),
        Err(_) => {}
    }
    let other_role = if spec.role == "printer" {
        "scanner"
    } else {
        "printer"
    };
    let serves_other = plugin.roles().split(',').any(|r| r.trim() == other_role);
    if !serves_other && plugin.create(config(other_role, &spec.valid)).is_ok() {
        problems.push(format!(
            "{file}: accepted role '{other_role}' it does not list"
        ));
    }
    for round in 1..=3 {
        match plugin.create(config(spec.role, &spec.valid)) {
            Ok(mut device) => {
                if let Err(e) = device.wait_until("a first report", Duration::from_secs(5), |m| {
                    (!m.is_empty()).then_some(())
                }) {
                    problems.push(format!("{file}: round {round}: {e}"));
                }
                let took = device.destroy();
                if took > Duration::from_secs(2) {
                    problems.push(format!("{file}: round {round}: destroy took {took:?}"));
                }
            }
            Err(e) => {
                problems.push(format!(
                    "{file}: round {round}: the valid options were refused: {e}"
                ));
                break;
            }
        }
    }
    problems
}
