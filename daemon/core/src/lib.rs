//! Leitsystem's core: the parts of the appliance that are plain values and pure functions.
//!
//! - [`clock`]: instants, service days in the site's time zone, and the guard that keeps a
//!   jumping wall clock from moving the engine's time.
//! - [`domain`]: identifiers, tickets, bookings, the commands the engine accepts and the events
//!   it commits.
//! - [`catalog`]: the site's master data as plain values (departments, services, desks,
//!   policy, ticket layout, token keys).
//! - [`display`]: the public display's projection of the events (the latest calls) and its
//!   shape; never personal data.
//! - [`engine`]: the queue engine: decide a command against the state, apply the events, rank
//!   the queues, estimate waits, check replay = views.
//! - [`token`]: signing and verifying check-in tokens (usable by the website side too).
//! - [`contract`]: the MQTT contract v1 with the city website: topics, wire types, validation
//!   into domain inputs, per-day booking digests, event batches.
//!
//! - `testing` (feature `testing`): the demo catalog built in code and an engine simulator,
//!   for engine tests here and in the daemon.
//!
//! What this crate must never do: depend on a runtime, a store, a network or a config format
//! (no tokio, sled, warp, rumqttc or toml; `tests/tests/layering.rs` checks it), read the
//! system clock other than through [`clock::SystemClock`], or touch files. The daemon
//! (`leitsystemd`) builds on it; nothing here knows the daemon.

pub mod catalog;
pub mod clock;
pub mod contract;
pub mod display;
pub mod domain;
pub mod engine;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
