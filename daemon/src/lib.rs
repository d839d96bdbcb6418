//! Leitsystem: visitor check-in and call system for town halls.
//!
//! The library behind the `leitsystemd` binary. Start with `ARCHITECTURE.md` at the repository
//! root; the code map there names the modules below.

/// Domain types, commands and events (the core crate).
pub use leitsystem_core::domain;
/// The queue engine (the core crate).
pub use leitsystem_core::engine;
/// Check-in tokens (the core crate).
pub use leitsystem_core::token;

pub mod api;
pub mod auth;
pub mod backup;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod desk_lights;
pub mod display;
pub mod hyphenate;
pub mod kiosk;
pub mod plugin_host;
pub mod service_manager;
/// The durable store (its own crate, `daemon/store`).
pub use leitsystem_store as store;
pub mod sync;
pub mod ticket;
pub mod web;
