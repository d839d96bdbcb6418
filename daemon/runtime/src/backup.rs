//! Backups of the store: one file with every record of a consistent state, and the restore
//! of such a file into a stopped appliance.
//!
//! **Consistency.** A running daemon writes the backup on its engine thread, between two
//! group commits (the `backup` op of the control socket): every command acknowledged before
//! the request is in it, nothing half-applied is. Commands wait while it is written (measured
//! in the backup test's log: the figure is printed there); a stopped appliance is backed up by
//! opening its store directly.
//!
//! **File format** (`.lsb`, version 1), all integers big-endian:
//! - the line `LEITSYSTEM-BACKUP 1\n`;
//! - one line of JSON, [`BackupHeader`];
//! - the records in key order, each `u32 key length, key, u32 value length, value`;
//! - a trailer: the 8 bytes `LSB-END\n`, `u64` record count, `u32` CRC-32 of everything before
//!   the trailer.
//!
//! A file that is cut short, changed, or from a newer schema is refused whole before anything
//! is written. The file holds personal data (names of today's visitors): it is created with
//! mode 0600.
//!
//! **Restore** builds the store in a staging directory next to the target, checks it with the
//! same replay as `leitsystemd verify`, and only then moves it into place (`--replace` keeps
//! the previous data directory as `<dir>.replaced-<time>`). The restored store gets a new log
//! epoch: its seqs go on from the backup's last seq, and a website must not mistake those for
//! events it already saw from the appliance before the restore (`daemon/docs/mqtt.md`).
//!
//! Over 600 lines (about 610): the backup format, its writer and the restore are one contract,
//! kept in one file so they change together; the tests are in `backup/tests.rs`.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::store::{SCHEMA_VERSION, Store, StoreError, StoreOptions};

/// The first line of every backup file.
pub const MAGIC: &[u8] = b"LEITSYSTEM-BACKUP 1\n";
const TRAILER_TAG: &[u8] = b"LSB-END\n";
const TRAILER_LEN: usize = 8 + 8 + 4;
/// Longest accepted header line.
const MAX_HEADER: usize = 64 * 1024;
/// Backups a running daemon keeps in `<data_dir>/backups` (older ones are deleted).
pub const KEEP_IN_DATA_DIR: usize = 2;
/// The folder in the data directory where a running daemon writes backups.
pub const BACKUP_DIR: &str = "backups";

/// Errors of backup and restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is not a (complete, unchanged) Leitsystem backup.
    #[error("{path} is not a usable Leitsystem backup: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The restore target cannot take the backup.
    #[error("cannot restore into {path}: {reason}")]
    Target {
        /// The data directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The restored store does not pass the replay check; nothing was moved into place.
    #[error("the restored store does not verify (nothing was changed): {0}")]
    Verify(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The header line of a backup file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    /// Always `leitsystem-backup`.
    pub format: String,
    /// The store schema of the records.
    pub schema_version: u32,
    /// The site the store belongs to.
    pub site: String,
    /// The log epoch of the store backed up.
    pub epoch: String,
    /// The last event seq in the backup.
    pub last_seq: u64,
    /// When it was taken (RFC 3339, UTC).
    pub created_at: String,
    /// The software that wrote it.
    pub software: String,
}

/// What a written or read backup holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupSummary {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: BackupHeader,
    /// Number of records.
    pub records: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// How long writing it took (ms); 0 for a file that was only read.
    #[serde(default)]
    pub millis: u64,
}

/// CRC-32 while writing.
struct Summing<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn len_u32(bytes: &[u8], path: &Path) -> Result<[u8; 4], BackupError> {
    u32::try_from(bytes.len())
        .map(u32::to_be_bytes)
        .map_err(|_| BackupError::Format {
            path: path.to_path_buf(),
            reason: "a record is larger than 4 GiB".to_string(),
        })
}

/// Writes a backup of `store` (whose events end at `last_seq`) to `target`: into
/// `target.partial` first, fsynced, then renamed, so `target` is complete or absent.
pub fn write_backup(
    store: &Store,
    site: &str,
    last_seq: u64,
    target: &Path,
) -> Result<BackupSummary, BackupError> {
    let started = Instant::now();
    let header = BackupHeader {
        format: "leitsystem-backup".to_string(),
        schema_version: SCHEMA_VERSION,
        site: site.to_string(),
        epoch: store.log_epoch().to_string(),
        last_seq,
        created_at: jiff::Timestamp::now().to_string(),
        software: concat!("leitsystemd ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    let partial = partial_path(target);
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io_err(&partial))?
    };
    let result = (|| {
        let mut out = Summing {
            inner: BufWriter::with_capacity(256 * 1024, &file),
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        let w = |r: std::io::Result<()>| r.map_err(io_err(&partial));
        w(out.write_all(MAGIC))?;
        let line = serde_json::to_vec(&header).map_err(|e| BackupError::Format {
            path: partial.clone(),
            reason: e.to_string(),
        })?;
        w(out.write_all(&line))?;
        w(out.write_all(b"\n"))?;
        let records = store.for_each_record(|key, value| -> Result<(), BackupError> {
            w(out.write_all(&len_u32(key, &partial)?))?;
            w(out.write_all(key))?;
            w(out.write_all(&len_u32(value, &partial)?))?;
            w(out.write_all(value))
        })?;
        let crc = out.hasher.clone().finalize();
        let mut inner = out.inner;
        w(inner.write_all(TRAILER_TAG))?;
        w(inner.write_all(&records.to_be_bytes()))?;
        w(inner.write_all(&crc.to_be_bytes()))?;
        w(inner.flush())?;
        drop(inner);
        file.sync_all().map_err(io_err(&partial))?;
        Ok((records, out.written + TRAILER_LEN as u64))
    })();
    let (records, bytes) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, target).map_err(io_err(target))?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
    }
    Ok(BackupSummary {
        path: target.to_path_buf(),
        header,
        records,
        bytes,
        millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

/// Writes a backup into the data directory's `backups/` folder (as a running daemon does) and
/// deletes all but the newest [`KEEP_IN_DATA_DIR`] there.
pub fn write_backup_in_data_dir(
    store: &Store,
    site: &str,
    last_seq: u64,
) -> Result<BackupSummary, BackupError> {
    let dir = store.dir().join(BACKUP_DIR);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
    }
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.3fZ")
        .to_string();
    let target = dir.join(format!("backup-{stamp}-seq{last_seq}.lsb"));
    let summary = write_backup(store, site, last_seq, &target)?;
    let mut kept: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("backup-") && n.ends_with(".lsb"))
        })
        .collect();
    kept.sort();
    let excess = kept.len().saturating_sub(KEEP_IN_DATA_DIR);
    for old in kept.into_iter().take(excess) {
        if old != target {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(file = %old.display(), "cannot delete an old backup: {e}");
            }
        }
    }
    Ok(summary)
}

/// A backup file read and checked whole.
#[derive(Debug)]
pub struct BackupContents {
    /// What it holds.
    pub summary: BackupSummary,
    /// The records, in key order.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads `path` and checks it: magic, header, every record's framing, count and CRC-32, and a
/// schema this build can open.
pub fn read_backup(path: &Path) -> Result<BackupContents, BackupError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path))?;
    let bad = |reason: String| BackupError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if !bytes.starts_with(MAGIC) {
        return Err(bad(
            "it does not start with LEITSYSTEM-BACKUP 1 (not a backup, or a newer format)"
                .to_string(),
        ));
    }
    if bytes.len() < MAGIC.len() + TRAILER_LEN {
        return Err(bad(format!("it is cut short ({} bytes)", bytes.len())));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    if &trailer[..8] != TRAILER_TAG {
        return Err(bad(
            "its end marker is missing: the file is cut short or was changed".to_string(),
        ));
    }
    let mut count_bytes = [0u8; 8];
    count_bytes.copy_from_slice(&trailer[8..16]);
    let expected_records = u64::from_be_bytes(count_bytes);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&trailer[16..20]);
    let expected_crc = u32::from_be_bytes(crc_bytes);
    let found_crc = crc32fast::hash(body);
    if found_crc != expected_crc {
        return Err(bad(format!(
            "its checksum does not match (CRC-32 {found_crc:08x}, recorded {expected_crc:08x}): \
             the file was damaged or changed"
        )));
    }
    let rest = &body[MAGIC.len()..];
    let header_end = rest
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("its header line is missing".to_string()))?;
    let header: BackupHeader = serde_json::from_slice(&rest[..header_end])
        .map_err(|e| bad(format!("its header cannot be read: {e}")))?;
    if header.format != "leitsystem-backup" {
        return Err(bad(format!("its header names format {:?}", header.format)));
    }
    if header.schema_version > SCHEMA_VERSION {
        return Err(bad(format!(
            "it holds store schema {}, but this leitsystemd supports up to {SCHEMA_VERSION}: \
             restore it with the newer leitsystemd",
            header.schema_version
        )));
    }
    let mut cursor = &rest[header_end + 1..];
    let mut records = Vec::new();
    let take = |cursor: &mut &[u8], what: &str| -> Result<Vec<u8>, BackupError> {
        if cursor.len() < 4 {
            return Err(bad(format!("the records end inside a {what}'s length")));
        }
        let (len, tail) = cursor.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if tail.len() < len {
            return Err(bad(format!("a {what} runs past the end of the records")));
        }
        let (value, tail) = tail.split_at(len);
        *cursor = tail;
        Ok(value.to_vec())
    };
    while !cursor.is_empty() {
        let key = take(&mut cursor, "key")?;
        let value = take(&mut cursor, "value")?;
        records.push((key, value));
    }
    if records.len() as u64 != expected_records {
        return Err(bad(format!(
            "it holds {} records, its trailer says {expected_records}",
            records.len()
        )));
    }
    Ok(BackupContents {
        summary: BackupSummary {
            path: path.to_path_buf(),
            header,
            records: expected_records,
            bytes: bytes.len() as u64,
            millis: 0,
        },
        records,
    })
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// The backup restored.
    pub backup: BackupSummary,
    /// The data directory now holding it.
    pub data_dir: PathBuf,
    /// The new log epoch of the restored store.
    pub epoch: String,
    /// Events in the restored log.
    pub events: u64,
    /// Where the previous data directory was kept (`--replace`).
    pub replaced: Option<PathBuf>,
}

/// Restores `backup` into `data_dir` of a stopped appliance. `data_dir` must be absent or
/// empty, unless `replace`: then the current one is kept as `<data_dir>.replaced-<time>`.
/// The restored store is verified (the replay of `leitsystemd verify` against `catalog`)
/// before it is moved into place; when run as root it is given the owner of the directory it
/// replaces.
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    replace: bool,
    catalog: Arc<Catalog>,
    options: &StoreOptions,
) -> Result<RestoreSummary, BackupError> {
    let contents = read_backup(backup)?;
    let header = &contents.summary.header;
    if header.site != catalog.site_id {
        return Err(BackupError::Target {
            path: data_dir.to_path_buf(),
            reason: format!(
                "the backup is of site {:?}, the config is for site {:?}",
                header.site, catalog.site_id
            ),
        });
    }
    let target_err = |reason: String| BackupError::Target {
        path: data_dir.to_path_buf(),
        reason,
    };
    let existing = match std::fs::read_dir(data_dir) {
        Ok(entries) => Some(entries.filter_map(|e| e.ok()).count()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(data_dir)(e)),
    };
    if existing.unwrap_or(0) > 0 {
        if !replace {
            return Err(target_err(
                "it is not empty; stop the daemon (systemctl stop leitsystemd) and run restore \
                 with --replace: the current data is kept next to it"
                    .to_string(),
            ));
        }
        crate::store::ensure_unused(data_dir).map_err(|e| match e {
            StoreError::Locked { .. } => target_err(
                "a running daemon holds its store: stop it first (systemctl stop leitsystemd)"
                    .to_string(),
            ),
            other => BackupError::Store(other),
        })?;
    }
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = data_dir
        .file_name()
        .ok_or_else(|| target_err("the path has no directory name".to_string()))?
        .to_string_lossy()
        .into_owned();
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    let built = build_store(&contents, &staging, catalog, options);
    let (epoch, events) = match built {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if let Err(e) = copy_owner(data_dir, &staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let mut replaced = None;
    if existing.is_some() {
        if existing.unwrap_or(0) > 0 {
            let stamp = jiff::Timestamp::now()
                .strftime("%Y%m%dT%H%M%SZ")
                .to_string();
            // A second restore within the same second gets a name of its own.
            let aside = (1..=100)
                .map(|n| match n {
                    1 => parent.join(format!("{name}.replaced-{stamp}")),
                    n => parent.join(format!("{name}.replaced-{stamp}-{n}")),
                })
                .find(|candidate| !candidate.exists());
            let Some(aside) = aside else {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(target_err(format!(
                    "100 earlier restores this second already kept their data as \
                     {name}.replaced-{stamp}*: wait a second and try again"
                )));
            };
            if let Err(e) = std::fs::rename(data_dir, &aside) {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(io_err(data_dir)(e));
            }
            replaced = Some(aside);
        } else if let Err(e) = std::fs::remove_dir(data_dir) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io_err(data_dir)(e));
        }
    }
    if let Err(e) = std::fs::rename(&staging, data_dir) {
        // Put the previous data back rather than leave no data directory at all.
        if let Some(aside) = &replaced {
            let _ = std::fs::rename(aside, data_dir);
        }
        let _ = std::fs::remove_dir_all(&staging);
        return Err(io_err(data_dir)(e));
    }
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(parent))?;
    Ok(RestoreSummary {
        backup: contents.summary,
        data_dir: data_dir.to_path_buf(),
        epoch,
        events,
        replaced,
    })
}

/// Creates the store in `staging`, imports the records, reopens it (running any migration of
/// an older schema) and verifies it. Returns the new epoch and the number of events.
fn build_store(
    contents: &BackupContents,
    staging: &Path,
    catalog: Arc<Catalog>,
    options: &StoreOptions,
) -> Result<(String, u64), BackupError> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(staging)
            .map_err(io_err(staging))?;
    }
    let store = Store::open(staging, options)?;
    store.import_records(&contents.records)?;
    store.close()?;
    let (engine, store) = crate::runtime::open_engine(catalog, staging, options)?;
    let verdict = crate::runtime::verify(&engine, &store);
    let epoch = store.log_epoch().to_string();
    let events = engine.state().last_seq;
    store.close()?;
    match verdict {
        Ok(problems) if problems.is_empty() => {}
        Ok(problems) => {
            // A problem may quote whole views: keep the message readable.
            let shown: Vec<String> = problems
                .iter()
                .take(5)
                .map(|p| match p.char_indices().nth(300) {
                    Some((cut, _)) => format!("{}…", &p[..cut]),
                    None => p.clone(),
                })
                .collect();
            return Err(BackupError::Verify(format!(
                "{} problem(s): {}",
                problems.len(),
                shown.join("; ")
            )));
        }
        Err(e) => return Err(BackupError::Verify(e)),
    }
    if events != contents.summary.header.last_seq {
        return Err(BackupError::Verify(format!(
            "the backup's header says its log ends at seq {}, the restored log ends at {events}",
            contents.summary.header.last_seq
        )));
    }
    Ok((epoch, events))
}

/// Gives everything in `staging` the owner and group of `original` (when it exists and we
/// may: only root can), so the daemon's user can open the restored store.
fn copy_owner(original: &Path, staging: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(original) else {
        return Ok(());
    };
    let Ok(mine) = std::fs::metadata(staging) else {
        return Ok(());
    };
    if meta.uid() == mine.uid() && meta.gid() == mine.gid() {
        return Ok(());
    }
    fn walk(path: &Path, uid: u32, gid: u32) -> Result<(), BackupError> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(path))?;
        if std::fs::symlink_metadata(path)
            .map_err(io_err(path))?
            .is_dir()
        {
            for entry in std::fs::read_dir(path).map_err(io_err(path))? {
                walk(&entry.map_err(io_err(path))?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(staging, meta.uid(), meta.gid())
}

#[cfg(test)]
mod tests;
