//! The command line (clap): subcommands and their options.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "leitsystemd",
    version,
    about = "Leitsystem: visitor check-in and call system"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run the daemon.
    Run {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides `site.data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the daemon on the embedded demo config (three services, four desks).
    Demo {
        /// Data directory (default: ~/.local/state/leitsystem-demo).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a config file: exit 0 when valid, 78 with file:line:column messages when not.
    CheckConfig {
        /// Config file.
        file: PathBuf,
    },
    /// Load every configured device's plugin and report, per device: id, plugin file, plugin
    /// name and version, ABI version, role, and OK or the error. Exit 1 if any failed.
    Plugins {
        /// Config file (default: the embedded demo config).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Render a sample ticket as the printer prints it: a PNG at the paper's real width
    /// (203 dpi), and optionally the printer-independent document as JSON.
    TicketPreview {
        /// Config file (default: the embedded demo config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Service id (default: the one with the most documents to bring).
        #[arg(long)]
        service: Option<String>,
        /// A walk-in ticket instead of an appointment.
        #[arg(long)]
        walk_in: bool,
        /// Paper width: 58 or 80 (mm).
        #[arg(long, default_value = "80")]
        paper: String,
        /// Where to write the PNG.
        #[arg(long)]
        out: PathBuf,
        /// Also write the document as JSON here.
        #[arg(long)]
        document: Option<PathBuf>,
    },
    /// Check a stopped daemon's store: replay the log and compare it with the views.
    Verify {
        /// Config file (default: the demo config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Back up the store to FILE: from the running daemon (over its control socket, between
    /// two commits, while it keeps serving), else from the stopped appliance's data directory.
    Backup {
        /// Where to write the backup (`.lsb`).
        file: PathBuf,
        /// Config file (default: the demo config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Restore a backup into a stopped appliance, verified before it is moved into place.
    Restore {
        /// The backup file (from `leitsystemd backup`).
        file: PathBuf,
        /// Config file (default: the demo config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory to restore into (must be empty or absent, unless --replace).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Replace the data directory's current store; it is kept as `<dir>.replaced-<time>`.
        #[arg(long)]
        replace: bool,
    },
    /// Hash a password for `[[web.user]]`: reads it from stdin (first line), prints the
    /// argon2id PHC string to put into `password_hash`.
    HashPassword,
    /// Use the demo's simulated devices: scan a code, press a desk button (no `nc` needed).
    Sim {
        /// Host of the simulated devices.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// Drive a running daemon by hand over its control socket.
    Ctl {
        /// Control socket (default: from --config, else the demo's).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Config file, to find the socket.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory, to find the socket.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Idempotency key: sending the same key again has no second effect.
        #[arg(long)]
        request_id: Option<String>,
        #[command(subcommand)]
        action: CtlAction,
    },
}

/// What `leitsystemd sim` does with a simulated device.
#[derive(Subcommand)]
pub(crate) enum DeviceAction {
    /// Scan a code at the simulated scanner (a booking id, a signed code, a URL holding one).
    Scan {
        /// The scanned text (or, with --signed, the demo booking whose signed code to scan).
        code: String,
        /// Scan the signed check-in code the running demo made for this booking (`DEMO-2`).
        #[arg(long)]
        signed: bool,
        /// The scanner's port (the demo's: 7101).
        #[arg(long, default_value_t = 7101)]
        port: u16,
    },
    /// Press a button of the simulated button box.
    Button {
        /// Desk id.
        desk: String,
        /// next, recall, start, done, no_show, park, resume, pause, open or alarm.
        action: String,
        /// The button box's port (the demo's: 7102).
        #[arg(long, default_value_t = 7102)]
        port: u16,
    },
}

#[derive(Subcommand)]
pub(crate) enum CtlAction {
    /// Pull a walk-in ticket.
    WalkIn {
        /// Service id.
        service: String,
        /// Priority 1 (normal) to 3.
        #[arg(long, default_value_t = 1)]
        priority: u8,
    },
    /// Check a booking in.
    CheckIn {
        /// Booking id.
        booking: String,
    },
    /// Finish the desk's visitor and call the next.
    Next {
        /// Desk id.
        desk: String,
    },
    /// Call a specific ticket.
    Call {
        /// Desk id.
        desk: String,
        /// Ticket number, e.g. A-003.
        ticket: String,
    },
    /// Call the desk's ticket again.
    Recall {
        /// Desk id.
        desk: String,
    },
    /// The called visitor arrived.
    Start {
        /// Desk id.
        desk: String,
    },
    /// The desk's visitor is done.
    Finish {
        /// Desk id.
        desk: String,
    },
    /// The called visitor did not come.
    NoShow {
        /// Desk id.
        desk: String,
    },
    /// Forward the desk's visitor.
    Forward {
        /// Desk id.
        desk: String,
        /// To this service.
        #[arg(long, conflicts_with = "to_desk", required_unless_present = "to_desk")]
        service: Option<String>,
        /// To this desk.
        #[arg(long = "to-desk")]
        to_desk: Option<String>,
    },
    /// Set the desk's visitor aside.
    Park {
        /// Desk id.
        desk: String,
    },
    /// Put a parked ticket back in line.
    Resume {
        /// Ticket number.
        ticket: String,
    },
    /// Change a ticket's priority.
    Priority {
        /// Ticket number.
        ticket: String,
        /// 1 to 3.
        priority: u8,
    },
    /// Open a desk.
    Open {
        /// Desk id.
        desk: String,
    },
    /// Pause a desk.
    Pause {
        /// Desk id.
        desk: String,
    },
    /// Close a desk.
    Close {
        /// Desk id.
        desk: String,
    },
    /// Create or update a booking from JSON
    /// (`{"id":..,"version":..,"service":..,"slot_start":<unix ms>,"duration_minutes":..}`).
    Booking {
        /// The booking as JSON.
        json: String,
    },
    /// Cancel a booking.
    CancelBooking {
        /// Booking id.
        booking: String,
        /// Version of the cancellation.
        version: u64,
    },
    /// Print a ticket again (e.g. after a printer failure).
    Reprint {
        /// Ticket number.
        ticket: String,
    },
    /// Acknowledge a silent alarm for everyone (its seq, as `state` lists it under `alarms`):
    /// the admin pages go quiet and the desk's light stops blinking.
    AcknowledgeAlarm {
        /// The alarm's seq.
        seq: u64,
    },
    /// Accept the wall clock's time: after a jump the daemon held (see `state`'s
    /// `clock_hold`) the service day follows the clock again; a day waiting for a synchronised
    /// clock (`clock_wait`) starts on the clock as it is.
    ConfirmClock,
    /// Show today's tickets, desks and waits.
    State,
    /// Show the health of every device.
    Devices,
    /// Check the store's consistency.
    Verify,
    /// Show the booking sync: connection, counters, per-day counts and digests.
    Sync,
}
