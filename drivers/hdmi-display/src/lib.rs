//! `hdmi-display`: a driver plugin (role `display`) that starts and supervises the kiosk
//! browser showing the daemon's `/display` page on the appliance's HDMI output, by default
//! `cage -- chromium --kiosk ... http://127.0.0.1:8080/display`.
//!
//! - [`settings`]: the options (`command`, `url`, `env`, `restart_min_ms`, `restart_max_ms`,
//!   `healthy_after_ms`, `stop_timeout_ms`, `log_output`), checked at `create`.
//! - [`process`]: the kiosk process in its own process group, watched with `waitid(WNOWAIT)`,
//!   signalled as a group, never left behind; its output split into bounded lines.
//! - [`driver`]: the plugin ([`driver::HdmiDisplay`]): the supervisor thread that starts,
//!   watches and restarts the kiosk with backoff and reports its health.
//!
//! `README.md` next to this crate documents the options and the set-up on the Raspberry Pi.

pub mod driver;
pub mod process;
pub mod settings;

pub use driver::{DisplaySummary, HdmiDisplay};
pub use settings::Settings;

leitsystem_plugin::export_plugin!(
    HdmiDisplay,
    name: "hdmi-display",
    version: env!("CARGO_PKG_VERSION"),
    roles: "display"
);
