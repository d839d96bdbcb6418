//! `leitsystem-runtime`: what every edge of the daemon builds on, and nothing edge-specific.
//!
//! - [`config`]: the TOML config, every section, parsed and validated in one place (the only
//!   user of TOML spans); [`catalog`] builds the engine's catalog from it; [`accounts`] are the
//!   web users it describes;
//! - [`runtime`]: the engine thread with group commit, [`runtime::EngineHandle`] (the one way
//!   in: every input becomes a command through it), the event feed and the scheduler;
//! - the projections several edges show: [`display`] (the wall display's state), [`kiosk`],
//!   [`ticket`] (layout and preview), [`hyphenate`];
//! - [`status`]: the boards edges publish their state on (device health, sync state), so no
//!   edge imports another; [`backup`] and [`clock`] (the appliance's clock and day gate).
//!
//! It must never know an edge: no plugin loading, MQTT, HTTP server or control socket here
//! (`tests/tests/layering.rs` enforces it).

/// Domain types, commands and events (the core crate).
pub use leitsystem_core::domain;
/// The queue engine (the core crate).
pub use leitsystem_core::engine;
/// Check-in tokens (the core crate).
pub use leitsystem_core::token;
/// The durable store (its own crate, `daemon/store`).
pub use leitsystem_store as store;

pub mod accounts;
pub mod backup;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod display;
pub mod hyphenate;
pub mod kiosk;
pub mod runtime;
pub mod status;
pub mod ticket;
