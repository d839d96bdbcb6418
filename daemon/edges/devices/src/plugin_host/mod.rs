//! The plugin host: loads driver plugins, runs one supervised instance per configured device,
//! turns what devices report into commands for the engine, and feeds printers and displays
//! from committed events. One file per job: `abi.rs` (the C ABI and all the `unsafe`),
//! `specs.rs` (devices from the config), `supervisor.rs` (threads, restarts, health),
//! `inputs.rs` (scans and buttons → commands), `outputs.rs` (print jobs, display state).
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

use std::time::Duration;

pub use leitsystem_runtime::status::{DeviceHealth, DeviceRegistry, DeviceState, STUCK_AFTER};

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

mod abi;
mod inputs;
mod outputs;
mod specs;
mod supervisor;

use abi::{DeviceEvent, Instance, Supervise};
pub use abi::{LoadedPlugin, PluginError, load_plugin, resolve_plugin};
use inputs::{Router, route_device, watch_overdue_prints};
use outputs::{
    PrintLedger, PrintRouting, derive_outputs, feed_displays, record_print, reprint_failed,
};
use specs::check_role;
pub use specs::{DeviceSpec, device_specs, probe_device};
pub use supervisor::{PluginHost, STOP_WAIT};
use supervisor::{now_millis, update};
