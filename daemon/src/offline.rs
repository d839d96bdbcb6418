//! What runs on a stopped appliance's store: backup to a file, restore from one, verify.

use super::{EXIT_CONFIG, EXIT_FAILURE};
use leitsystem::config::Config;
use leitsystem::control::{ControlClient, ControlRequest};
use leitsystem::daemon;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// `leitsystemd backup`: asks the running daemon for a backup and copies it to `file`, or,
/// when no daemon answers on the socket, backs up the stopped appliance's store directly.
/// The copy at `file` is read back and checked before this reports success.
pub(crate) fn backup_to_file(cfg: &Config, dir: &Path, file: &Path) -> anyhow::Result<String> {
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
pub(crate) fn copy_durably(from: &Path, to: &Path) -> anyhow::Result<()> {
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
pub(crate) fn restore_from_file(
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

pub(crate) fn verify_offline(config: Config, dir: &Path) -> ExitCode {
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
