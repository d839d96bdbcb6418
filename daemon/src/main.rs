//! `leitsystemd`: the Leitsystem daemon and its command-line tools.
//!
//! A thin binary: it parses flags, loads and validates the config (exit code 78 for a bad
//! config, before anything starts), and hands over to the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use leitsystem::config::{Config, ConfigError};
use leitsystem::control::{ControlClient, ControlRequest};
use leitsystem::daemon;
use leitsystem::domain::ServiceId;
use tokio_util::sync::CancellationToken;

mod cli;
pub(crate) use cli::{Cli, Cmd, CtlAction, DeviceAction};
mod offline;
pub(crate) use offline::{backup_to_file, restore_from_file, verify_offline};
mod ctl;
pub(crate) use ctl::ctl;

mod demo_site;

/// Exit code for an invalid config (sysexits' EX_CONFIG); systemd does not restart on it.
const EXIT_CONFIG: u8 = 78;
/// Exit code for a refused or failed operation.
const EXIT_FAILURE: u8 = 1;

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
