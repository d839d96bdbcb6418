//! Leitsystem: visitor check-in and call system for town halls.
//!
//! The library behind the `leitsystemd` binary: the composition root ([`daemon::run`], the
//! only code that knows every edge) and [`service_manager`] (systemd notify and watchdog). The
//! other modules are re-exported from their crates under the names the tests and tools use;
//! `ARCHITECTURE.md` at the repository root has the map and the rules of who imports whom.
//!
//! What it must never hold: the logic of an edge or of the engine. It wires them, nothing more.

/// Domain types, commands and events (the core crate).
pub use leitsystem_core::domain;
/// The queue engine (the core crate).
pub use leitsystem_core::engine;
/// Check-in tokens (the core crate).
pub use leitsystem_core::token;
/// The durable store (its own crate, `daemon/store`).
pub use leitsystem_store as store;

/// Web user accounts (the runtime crate).
pub use leitsystem_runtime::accounts;
/// Backup and restore (the runtime crate).
pub use leitsystem_runtime::backup;
/// The catalog built from the config (the runtime crate).
pub use leitsystem_runtime::catalog;
/// The appliance's clock and day gate (the runtime crate).
pub use leitsystem_runtime::clock;
/// The config, every section (the runtime crate).
pub use leitsystem_runtime::config;
/// The wall display's projection (the runtime crate).
pub use leitsystem_runtime::display;
/// Hyphenation for narrow displays (the runtime crate).
pub use leitsystem_runtime::hyphenate;
/// The kiosk's projection (the runtime crate).
pub use leitsystem_runtime::kiosk;
/// The edges' status boards (the runtime crate).
pub use leitsystem_runtime::status;
/// Ticket layout and preview (the runtime crate).
pub use leitsystem_runtime::ticket;

/// The control socket (an edge).
pub use leitsystem_control as control;
/// The desk LEDs' projection (the device edge).
pub use leitsystem_devices::desk_lights;
/// Driver plugins: loading, supervision, input and output (the device edge).
pub use leitsystem_devices::plugin_host;
/// The MQTT sync (an edge).
pub use leitsystem_sync as sync;
/// The JSON API (the web edge).
pub use leitsystem_web::api;
/// Logins and sessions (the web edge).
pub use leitsystem_web::auth;
/// The web server (the web edge).
pub use leitsystem_web::web;

pub mod daemon;
pub mod service_manager;
