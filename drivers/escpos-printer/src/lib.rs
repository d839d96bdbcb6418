//! `escpos-printer`: a driver plugin for ESC/POS thermal printers (Epson TM-T20, TM-T88 and
//! compatibles) over a serial port, the Linux USB printer class device or TCP (port 9100).
//!
//! - [`profiles`]: printer models as data (`profiles.toml`): paper width, native QR codes,
//!   cutter, code pages, real-time status.
//! - [`mod@encode`]: a ticket [`Document`](leitsystem_plugin::document::Document) as ESC/POS bytes,
//!   pure; [`encode::encode_for`] is what the driver sends.
//! - [`status`]: `DLE EOT n` real-time status queries and their answer bits.
//! - [`link`]: the transports behind one [`link::Link`] trait, with deadlines on every wait.
//! - [`driver`]: the plugin ([`driver::EscposPrinter`]): options, the worker thread that owns
//!   the link, reconnects, polls the status and prints jobs.
//!
//! `README.md` next to this crate documents the options, the profiles and the wire format.
//!
//! Like every driver, it must never touch the store or MQTT, block in the host's `emit`, or let a
//! panic cross the ABI: it speaks only plugin messages.

pub mod driver;
pub mod encode;
pub mod link;
pub mod profiles;
pub mod status;

pub use driver::EscposPrinter;
pub use encode::{EncodeError, QrMode, encode, encode_for};
pub use profiles::{Profile, lookup};

leitsystem_plugin::export_plugin!(
    EscposPrinter,
    name: "escpos-printer",
    version: env!("CARGO_PKG_VERSION"),
    roles: "printer"
);
