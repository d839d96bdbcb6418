//! `leitsystem-devices`: the device edge. [`plugin_host`] loads the driver plugins through the
//! versioned C ABI (all the `unsafe` of the daemon's side is there), supervises them and turns
//! their input into commands; [`desk_lights`] derives what the buttons' desk LEDs show.
//!
//! Builds on the runtime and never on another edge; the composition root (`leitsystemd`)
//! starts it. Drivers never see the store or MQTT: only messages.

pub mod desk_lights;
pub mod plugin_host;
