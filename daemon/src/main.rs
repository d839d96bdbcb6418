//! `leitsystemd`: the Leitsystem daemon and its command-line tools.
//!
//! A thin binary: it parses flags, loads and validates the config (exit code 78 for a bad
//! config, before anything starts), and hands over to the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leitsystem::config::{Config, ConfigError};
use leitsystem::control::{ControlClient, ControlRequest, ControlResponse};
use leitsystem::daemon;
use leitsystem::domain::{
    BookingId, BookingInput, Command, DeskId, ForwardTarget, ServiceId, TicketNumber,
};
use tokio_util::sync::CancellationToken;

mod demo_site;

/// Exit code for an invalid config (sysexits' EX_CONFIG); systemd does not restart on it.
const EXIT_CONFIG: u8 = 78;
/// Exit code for a refused or failed operation.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "leitsystemd",
    version,
    about = "Leitsystem: visitor check-in and call system"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
enum DeviceAction {
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
enum CtlAction {
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

/// Caps glibc's malloc arenas at 2 (unless `MALLOC_ARENA_MAX` says otherwise), before any
/// thread starts. By default every busy thread (tokio workers, the engine, sled's I/O pool) may
/// get an arena of its own, and memory freed in one is never reused by another. Measured with
/// `benches/sync.rs` (50,000 bookings): peak RSS 61-64 MB by default, 58-60 MB with 2 arenas, at
/// the same bookings per second.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            // Large blocks (argon2's 19 MiB per password check) are mapped and unmapped each
            // time. glibc's default threshold grows with every freed large block, after which
            // such blocks stay in the arenas: a login flood then kept ~80 MiB more resident.
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                let _ = writeln!(
                    std::io::stdout(),
                    "{}: OK ({} departments, {} services, {} desks)",
                    file.display(),
                    config.departments.len(),
                    config.services.len(),
                    config.desks.len()
                );
                for warning in config.warnings() {
                    let _ = writeln!(std::io::stdout(), "warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Cmd::Run { config, data_dir } => match Config::load(&config) {
            Ok(cfg) => {
                let dir = daemon::data_dir(&cfg, data_dir.as_deref());
                run_daemon(cfg, config_dir_of(Some(&config)), dir)
            }
            Err(e) => config_failure(&e),
        },
        Cmd::Plugins { config } => match load_config_or_demo(config.as_deref()) {
            Ok(cfg) => {
                // A daemon running on this config holds the devices (ports, serial lines, a
                // grabbed scanner): the plugins are then loaded and checked, not started.
                let socket = match config {
                    Some(_) => Some(cfg.control_socket(&cfg.site.data_dir)),
                    None => demo_site::running_demo_socket(&demo_data_dir())
                        .or_else(|| Some(cfg.control_socket(&demo_data_dir()))),
                };
                let running = socket.filter(|s| {
                    ControlClient::connect(s)
                        .and_then(|mut c| c.request(&ControlRequest::State))
                        .is_ok()
                });
                report_plugins(&cfg, &config_dir_of(config.as_deref()), running.as_deref())
            }
            Err(e) => config_failure(&e),
        },
        Cmd::Demo { data_dir } => {
            let dir = data_dir.unwrap_or_else(demo_data_dir);
            match demo_site::prepare(&dir) {
                Ok((cfg, demo)) => {
                    tracing::info!(
                        data_dir = %dir.display(),
                        "demo: try `leitsystemd ctl walk-in ausweis`, `leitsystemd ctl open 1`, \
                         `leitsystemd ctl next 1`, `leitsystemd ctl state`"
                    );
                    let socket = cfg.control_socket(&dir);
                    demo.seed_when_up(socket.clone(), demo_data_dir(), &cfg);
                    let code = run_daemon(cfg, config_dir_of(None), dir);
                    demo_site::DemoSite::forget(&socket, &demo_data_dir());
                    code
                }
                Err(e) => config_failure(&e),
            }
        }
        Cmd::Sim { host, action } => {
            let (port, line) = match action {
                DeviceAction::Scan {
                    code,
                    signed: true,
                    port,
                } => match demo_site::signed_code(&demo_data_dir(), &code) {
                    Ok(signed) => (port, signed),
                    Err(e) => {
                        let _ = writeln!(std::io::stderr(), "sim: {e:#}");
                        return ExitCode::from(EXIT_FAILURE);
                    }
                },
                DeviceAction::Scan { code, port, .. } => (port, code),
                DeviceAction::Button { desk, action, port } => (port, format!("{desk} {action}")),
            };
            match demo_site::send_line(&host, port, &line) {
                Ok(answer) if answer == "OK" => {
                    let _ = writeln!(
                        std::io::stdout(),
                        "OK: the device took it; `leitsystemd ctl state` shows what happened"
                    );
                    ExitCode::SUCCESS
                }
                Ok(answer) => {
                    let _ = writeln!(std::io::stderr(), "the device answered: {answer}");
                    ExitCode::from(EXIT_FAILURE)
                }
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "sim: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Cmd::TicketPreview {
            config,
            service,
            walk_in,
            paper,
            out,
            document,
        } => match load_config_or_demo(config.as_deref()) {
            Ok(cfg) => ticket_preview(&cfg, service, walk_in, &paper, &out, document.as_deref()),
            Err(e) => config_failure(&e),
        },
        Cmd::Verify { config, data_dir } => {
            let (cfg, dir) = match config_and_dir(config.as_deref(), data_dir) {
                Ok(found) => found,
                Err(code) => return code,
            };
            verify_offline(cfg, &dir)
        }
        Cmd::Backup {
            file,
            config,
            data_dir,
        } => {
            let (cfg, dir) = match config_and_dir(config.as_deref(), data_dir) {
                Ok(found) => found,
                Err(code) => return code,
            };
            report(backup_to_file(&cfg, &dir, &file), "backup")
        }
        Cmd::Restore {
            file,
            config,
            data_dir,
            replace,
        } => {
            let (cfg, dir) = match config_and_dir(config.as_deref(), data_dir) {
                Ok(found) => found,
                Err(code) => return code,
            };
            report(restore_from_file(&cfg, &dir, &file, replace), "restore")
        }
        Cmd::HashPassword => hash_password(),
        Cmd::Ctl {
            socket,
            config,
            data_dir,
            request_id,
            action,
        } => {
            // Without a socket, config or data dir: the running demo, wherever its data is.
            let demo = (socket.is_none() && config.is_none() && data_dir.is_none())
                .then(|| demo_site::running_demo_socket(&demo_data_dir()))
                .flatten();
            let socket = match socket.or(demo) {
                Some(s) => s,
                None => match load_config_or_demo(config.as_deref()) {
                    Ok(cfg) => {
                        let dir = data_dir.unwrap_or_else(|| default_dir(&cfg, config.is_some()));
                        cfg.control_socket(&dir)
                    }
                    Err(e) => return config_failure(&e),
                },
            };
            ctl(&socket, request_id, action)
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    let password = line.trim_end_matches(['\n', '\r']);
    if read.is_err() || password.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "hash-password: give the password on stdin, e.g. `leitsystemd hash-password < file` \
             or type it and press Enter"
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    match leitsystem::auth::hash_password(password) {
        Ok(hash) => {
            let _ = writeln!(std::io::stdout(), "{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "hash-password: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn ticket_preview(
    config: &Config,
    service: Option<String>,
    walk_in: bool,
    paper: &str,
    out: &Path,
    document_out: Option<&Path>,
) -> ExitCode {
    let fail = |message: String| {
        let _ = writeln!(std::io::stderr(), "ticket-preview: {message}");
        ExitCode::from(EXIT_FAILURE)
    };
    let Some(paper) = leitsystem::ticket::Paper::parse(paper) else {
        return fail(format!("paper '{paper}' is not 58 or 80"));
    };
    let catalog = match leitsystem::catalog::from_config(config) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let now = leitsystem::clock::Clock::now(&leitsystem::clock::SystemClock);
    let service = service.map(ServiceId::new);
    let Some(ticket) = leitsystem::ticket::sample_ticket(&catalog, service.as_ref(), !walk_in, now)
    else {
        return fail("no such service in the config".to_string());
    };
    let document = leitsystem::ticket::ticket_document(&ticket, &catalog, now);
    let png = match leitsystem::ticket::render_png(&document, paper) {
        Ok(png) => png,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = std::fs::write(out, png) {
        return fail(format!("cannot write {}: {e}", out.display()));
    }
    if let Some(path) = document_out {
        let json = serde_json::to_vec_pretty(&document).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
    }
    let qr = leitsystem::ticket::qr_payload(&ticket, &catalog).unwrap_or_default();
    let _ = writeln!(
        std::io::stdout(),
        "{}: ticket {} ({}), QR: {qr}",
        out.display(),
        ticket.number,
        ticket.service
    );
    ExitCode::SUCCESS
}

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd stderr is the journal: log to journald directly, with each event's level
    // as the priority and its fields as journal fields (`journalctl -u leitsystemd -p warning`).
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald.with_syslog_identifier("leitsystemd".to_string()))
            .init();
        return;
    }
    // Colours only on a terminal; log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the stream's
/// `device:inode` (systemd.exec(5)); a redirected stderr no longer matches it.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse::<u64>().ok() == Some(meta.dev()) && inode.parse::<u64>().ok() == Some(meta.ino())
}

fn config_failure(e: &ConfigError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{e}");
    ExitCode::from(EXIT_CONFIG)
}

fn load_config_or_demo(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::demo(),
    }
}

fn default_dir(config: &Config, from_file: bool) -> PathBuf {
    if from_file {
        config.site.data_dir.clone()
    } else {
        demo_data_dir()
    }
}

fn demo_data_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(state).join("leitsystem-demo");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/leitsystem-demo"),
        None => std::env::temp_dir().join("leitsystem-demo"),
    }
}

/// The directory relative plugin paths are resolved against: the config file's, or for the
/// embedded demo config the binary's own (where cargo puts the driver plugins).
fn config_dir_of(config: Option<&Path>) -> PathBuf {
    let dir = match config {
        Some(file) => file.parent().map(Path::to_path_buf),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf)),
    };
    let dir = dir
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    dir.canonicalize().unwrap_or(dir)
}

fn report_plugins(config: &Config, config_dir: &Path, running: Option<&Path>) -> ExitCode {
    // Probing creates each device once; `${data_dir}` points at a scratch directory so the
    // check never writes into the real data directory (a printer would create its job folder
    // there, and a data directory holding files but no store is refused as foreign).
    let scratch = std::env::temp_dir().join(format!("leitsystemd-plugins-{}", std::process::id()));
    let specs = leitsystem::plugin_host::device_specs(config, config_dir, &scratch);
    if let Some(socket) = running {
        let _ = writeln!(
            std::io::stdout(),
            "a daemon is running on this config ({}): its devices are in use, so the plugins \
             are loaded and checked but not started; `leitsystemd ctl devices` shows the \
             devices' health",
            socket.display()
        );
    }
    let code = probe_all(&specs, running.is_none());
    let _ = std::fs::remove_dir_all(&scratch);
    code
}

fn probe_all(specs: &[leitsystem::plugin_host::DeviceSpec], create: bool) -> ExitCode {
    let mut failed = 0;
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:<22} {:<4} {:<40} result",
        "device", "role", "plugin", "abi", "file"
    );
    for spec in specs {
        let file = spec.plugin_path.display().to_string();
        match leitsystem::plugin_host::probe_device(spec, create) {
            Ok(plugin) => {
                let _ = writeln!(
                    out,
                    "{:<16} {:<8} {:<22} {:<4} {:<40} OK",
                    spec.id,
                    spec.role.as_str(),
                    format!("{} {}", plugin.name, plugin.version),
                    plugin.abi_version,
                    file
                );
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(
                    out,
                    "{:<16} {:<8} {:<22} {:<4} {:<40} ERROR: {e}",
                    spec.id,
                    spec.role.as_str(),
                    "-",
                    "-",
                    file
                );
            }
        }
    }
    if failed > 0 {
        let _ = writeln!(out, "{failed} of {} devices failed", specs.len());
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_daemon(config: Config, config_dir: PathBuf, data_dir: PathBuf) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        daemon::run(config, config_dir, data_dir, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The config (or the demo's) and the data directory (`--data-dir`, else the config's);
/// `Err` is the exit code after the config's errors were printed.
fn config_and_dir(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> Result<(Config, PathBuf), ExitCode> {
    let cfg = load_config_or_demo(config).map_err(|e| config_failure(&e))?;
    let dir = data_dir.unwrap_or_else(|| default_dir(&cfg, config.is_some()));
    Ok((cfg, dir))
}

/// Prints `Ok`'s line on stdout (exit 0) or the error on stderr (exit 1).
fn report(result: anyhow::Result<String>, what: &str) -> ExitCode {
    match result {
        Ok(line) => {
            let _ = writeln!(std::io::stdout(), "{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{what}: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `leitsystemd backup`: asks the running daemon for a backup and copies it to `file`, or,
/// when no daemon answers on the socket, backs up the stopped appliance's store directly.
/// The copy at `file` is read back and checked before this reports success.
fn backup_to_file(cfg: &Config, dir: &Path, file: &Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use leitsystem::backup;
    let socket = cfg.control_socket(dir);
    let live = match ControlClient::connect(&socket) {
        Ok(client) => Some(client),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            None
        }
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", socket.display())),
    };
    let (summary, how) = if let Some(mut client) = live {
        let response = client
            .request(&ControlRequest::Backup)
            .with_context(|| format!("asking the daemon on {} for a backup", socket.display()))?;
        let written = match (response.ok, response.backup) {
            (true, Some(summary)) => summary,
            _ => anyhow::bail!(
                "the daemon refused: {}",
                response.error.map(|e| e.message).unwrap_or_default()
            ),
        };
        copy_durably(&written.path, file)?;
        let how = format!(
            "from the running daemon (commands waited {} ms; its copy: {})",
            written.millis,
            written.path.display()
        );
        (written, how)
    } else {
        if !dir.join(leitsystem::store::FORMAT_FILE).is_file() {
            anyhow::bail!(
                "no daemon answers on {} and {} holds no store",
                socket.display(),
                dir.display()
            );
        }
        let store = leitsystem::store::Store::open(dir, &daemon::store_options(cfg))
            .with_context(|| format!("opening the store in {}", dir.display()))?;
        let last_seq = store.last_log_seq()?;
        let written = backup::write_backup(&store, cfg.site.id.get_ref(), last_seq, file);
        store.close()?;
        (written?, "from the stopped appliance's store".to_string())
    };
    let check = backup::read_backup(file).context("reading the backup back")?;
    anyhow::ensure!(
        check.summary.records == summary.records && check.summary.header == summary.header,
        "the copy at {} differs from the backup written",
        file.display()
    );
    Ok(format!(
        "{}: backup of {} up to seq {} ({} records, {} bytes), {how}",
        file.display(),
        summary.header.site,
        summary.header.last_seq,
        summary.records,
        summary.bytes
    ))
}

/// Copies `from` to `to` through `to.partial`, fsynced, mode 0600.
fn copy_durably(from: &Path, to: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut partial_name = to.file_name().unwrap_or_default().to_os_string();
    partial_name.push(".partial");
    let partial = to.with_file_name(partial_name);
    let mut source =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    std::io::copy(&mut source, &mut out)
        .and_then(|_| out.sync_all())
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(())
}

/// `leitsystemd restore`.
fn restore_from_file(
    cfg: &Config,
    dir: &Path,
    file: &Path,
    replace: bool,
) -> anyhow::Result<String> {
    let catalog = std::sync::Arc::new(leitsystem::catalog::from_config(cfg)?);
    let done =
        leitsystem::backup::restore(file, dir, replace, catalog, &daemon::store_options(cfg))?;
    let mut line = format!(
        "{}: restored {} (site {}, taken {}): {} events, verified; new log epoch {}",
        done.data_dir.display(),
        file.display(),
        done.backup.header.site,
        done.backup.header.created_at,
        done.events,
        done.epoch
    );
    if let Some(aside) = done.replaced {
        line.push_str(&format!("; the previous data is in {}", aside.display()));
    }
    Ok(line)
}

fn verify_offline(config: Config, dir: &Path) -> ExitCode {
    let catalog = match leitsystem::catalog::from_config(&config) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = daemon::store_options(&config);
    let (engine, store) = match daemon::open_engine(catalog, dir, &options) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let verdict = daemon::verify(&engine, &store);
    if let Err(e) = store.close() {
        tracing::error!("{e}");
    }
    match verdict {
        Ok(problems) if problems.is_empty() => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: consistent ({} events)",
                dir.display(),
                engine.state().last_seq
            );
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in problems {
                let _ = writeln!(std::io::stdout(), "problem: {p}");
            }
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn ctl(socket: &Path, request_id: Option<String>, action: CtlAction) -> ExitCode {
    let desk = |d: String| DeskId::new(d);
    let ticket = |t: String| TicketNumber::new(t);
    let command = match action {
        CtlAction::State => return ctl_send(socket, &ControlRequest::State),
        CtlAction::Devices => return ctl_send(socket, &ControlRequest::Devices),
        CtlAction::Verify => return ctl_send(socket, &ControlRequest::Verify),
        CtlAction::Sync => return ctl_send(socket, &ControlRequest::Sync),
        CtlAction::WalkIn { service, priority } => Command::WalkIn {
            service: ServiceId::new(service),
            priority,
        },
        CtlAction::CheckIn { booking } => Command::CheckIn {
            booking: BookingId::new(booking),
        },
        CtlAction::Reprint { ticket } => Command::Reprint {
            ticket: TicketNumber::new(ticket),
        },
        CtlAction::AcknowledgeAlarm { seq } => Command::AcknowledgeAlarm { alarm: seq },
        CtlAction::Next { desk: d } => Command::CallNext { desk: desk(d) },
        CtlAction::Call { desk: d, ticket: t } => Command::CallTicket {
            desk: desk(d),
            ticket: ticket(t),
        },
        CtlAction::Recall { desk: d } => Command::Recall { desk: desk(d) },
        CtlAction::Start { desk: d } => Command::StartService { desk: desk(d) },
        CtlAction::Finish { desk: d } => Command::Finish { desk: desk(d) },
        CtlAction::NoShow { desk: d } => Command::NoShow { desk: desk(d) },
        CtlAction::Forward {
            desk: d,
            service,
            to_desk,
        } => Command::Forward {
            desk: desk(d),
            target: match (service, to_desk) {
                (Some(s), _) => ForwardTarget::Service(ServiceId::new(s)),
                (None, Some(t)) => ForwardTarget::Desk(DeskId::new(t)),
                (None, None) => {
                    let _ = writeln!(std::io::stderr(), "forward needs --service or --to-desk");
                    return ExitCode::from(2);
                }
            },
        },
        CtlAction::Park { desk: d } => Command::Park { desk: desk(d) },
        CtlAction::Resume { ticket: t } => Command::Resume { ticket: ticket(t) },
        CtlAction::Priority {
            ticket: t,
            priority,
        } => Command::SetPriority {
            ticket: ticket(t),
            priority,
        },
        CtlAction::Open { desk: d } => Command::OpenDesk { desk: desk(d) },
        CtlAction::Pause { desk: d } => Command::PauseDesk { desk: desk(d) },
        CtlAction::Close { desk: d } => Command::CloseDesk { desk: desk(d) },
        CtlAction::Booking { json } => match serde_json::from_str::<BookingInput>(&json) {
            Ok(booking) => Command::UpsertBooking { booking },
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "invalid booking JSON: {e}");
                return ExitCode::from(2);
            }
        },
        CtlAction::CancelBooking { booking, version } => Command::CancelBooking {
            booking: BookingId::new(booking),
            version,
        },
        CtlAction::ConfirmClock => Command::ConfirmClock,
    };
    ctl_send(
        socket,
        &ControlRequest::Execute {
            request_id,
            command,
        },
    )
}

fn ctl_send(socket: &Path, request: &ControlRequest) -> ExitCode {
    let response: std::io::Result<ControlResponse> =
        ControlClient::connect(socket).and_then(|mut client| client.request(request));
    match response {
        Ok(response) => {
            let text = serde_json::to_string_pretty(&response).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{text}");
            if response.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "cannot reach leitsystemd at {}: {e}. Is it running? Start the demo with \
                 `bash daemon/demo.sh`; for another daemon give its --config FILE (or \
                 --data-dir DIR, or --socket PATH)",
                socket.display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
