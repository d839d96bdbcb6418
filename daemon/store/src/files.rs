//! The files around sled: the `FORMAT` marker, `CLEAN`'s file sums, small files written
//! durably.

use super::{
    FORMAT_FILE, FORMAT_NAME, FileSum, FormatMarker, MarkerState, STORE_DIR, StoreError,
    StoreOptions, fsync_path, io_err,
};
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Serialises a store value; `serde_json` cannot fail on these plain data types (string keys,
/// no floats), so an empty value here would be a programming error caught by the tests.
pub(crate) fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn parse_marker(dir: &Path, bytes: &[u8]) -> Result<FormatMarker, StoreError> {
    let marker: FormatMarker = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        dir: dir.to_path_buf(),
        reason: format!("{FORMAT_FILE} cannot be read: {e}"),
    })?;
    if marker.format != FORMAT_NAME {
        return Err(StoreError::Foreign {
            dir: dir.to_path_buf(),
            found: format!("a {FORMAT_FILE} file of format '{}'", marker.format),
        });
    }
    Ok(marker)
}

pub(crate) fn write_marker(
    dir: &Path,
    schema_version: u32,
    state: MarkerState,
) -> Result<(), StoreError> {
    let marker = FormatMarker {
        format: FORMAT_NAME.to_string(),
        schema_version,
        state,
    };
    write_small_file(
        dir,
        FORMAT_FILE,
        &serde_json::to_vec(&marker).unwrap_or_default(),
    )
}

/// Replaces `dir/name` atomically and durably (temp file, fsync, rename, directory fsync).
pub(crate) fn write_small_file(dir: &Path, name: &str, body: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(body).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    fsync_path(dir)
}

/// Length and CRC-32 of every file below `root`, sorted by path.
pub(crate) fn file_sums(root: &Path) -> Result<Vec<FileSum>, StoreError> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err(&path))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                let (len, crc32) = crc_of_file(&path)?;
                out.push(FileSum {
                    path: Path::new(STORE_DIR)
                        .join(path.strip_prefix(root).unwrap_or(&path))
                        .to_string_lossy()
                        .into_owned(),
                    len,
                    crc32,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Length and CRC-32 of a file, read in small chunks (stores can be larger than the RAM).
pub(crate) fn crc_of_file(path: &Path) -> Result<(u64, u32), StoreError> {
    use std::io::Read;
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io_err(path))?;
        if n == 0 {
            return Ok((len, hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
        len += n as u64;
    }
}

pub(crate) fn describe_difference(expected: &[FileSum], found: &[FileSum]) -> String {
    for e in expected {
        match found.iter().find(|f| f.path == e.path) {
            None => return format!("{} is missing", e.path),
            Some(f) if f.len != e.len => {
                return format!("{} has {} bytes instead of {}", e.path, f.len, e.len);
            }
            Some(f) if f.crc32 != e.crc32 => return format!("{} has different content", e.path),
            Some(_) => {}
        }
    }
    match found
        .iter()
        .find(|f| !expected.iter().any(|e| e.path == f.path))
    {
        Some(f) => format!("{} is new", f.path),
        None => "the file list differs".to_string(),
    }
}

/// Takes an exclusive `flock` on `path` (the lock sled uses), retrying up to `wait`.
/// Fails with [`StoreError::Locked`] when a process (a running daemon) holds the store in
/// `dir`; Ok when nobody does or there is no store. Changes nothing.
pub fn ensure_unused(dir: &Path) -> Result<(), StoreError> {
    let db = dir.join(STORE_DIR).join("db");
    if !db.is_file() {
        return Ok(());
    }
    lock_with_retry(&db, dir, Duration::ZERO).map(drop)
}

pub(crate) fn lock_with_retry(path: &Path, dir: &Path, wait: Duration) -> Result<File, StoreError> {
    use std::os::unix::io::AsRawFd;
    let file = File::open(path).map_err(io_err(path))?;
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if locked {
            return Ok(file);
        }
        if started.elapsed() >= wait {
            return Err(StoreError::Locked {
                dir: dir.to_path_buf(),
                waited_ms: started.elapsed().as_millis(),
            });
        }
        tracing::info!(dir = %dir.display(), "store still locked, retrying");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Removes `snap.*.generating` files: snapshots whose writing was interrupted (sled writes
/// them, fsyncs, then renames; older snapshots are deleted only after the rename). sled 0.34
/// would pick such a partial file as the newest snapshot and refuse to open ("empty/corrupt
/// snapshot file found"), measured by killing the daemon while sled opened a store.
pub(crate) fn remove_interrupted_snapshots(store_dir: &Path) -> Result<(), StoreError> {
    let mut removed = false;
    for entry in std::fs::read_dir(store_dir).map_err(io_err(store_dir))? {
        let entry = entry.map_err(io_err(store_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing an interrupted snapshot");
            std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            removed = true;
        }
    }
    if removed {
        fsync_path(store_dir)?;
    }
    Ok(())
}

pub(crate) fn open_sled_with_retry(
    store_dir: &Path,
    options: &StoreOptions,
) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let result = sled::Config::new()
            .path(store_dir)
            .cache_capacity(options.cache_bytes)
            // HighThroughput rewrites less than LowSpace: fewer writes wear the SD card less.
            .mode(sled::Mode::HighThroughput)
            .use_compression(false)
            // We flush (and fsync) on every commit ourselves.
            .flush_every_ms(None)
            .open();
        match result {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= options.lock_wait {
                    return Err(StoreError::Locked {
                        dir: store_dir.to_path_buf(),
                        waited_ms: started.elapsed().as_millis(),
                    });
                }
                tracing::info!(dir = %store_dir.display(), "store still locked, retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(sled::Error::Corruption { at, bt: _ }) => {
                return Err(StoreError::Corrupt {
                    dir: store_dir.to_path_buf(),
                    reason: match at {
                        Some(at) => format!(
                            "sled found corrupted data at {at:?}; restore the data directory \
                             from a backup"
                        ),
                        None => "sled found its log and snapshot inconsistent; restore the \
                                 data directory from a backup"
                            .to_string(),
                    },
                });
            }
            Err(source) => {
                return Err(StoreError::Database {
                    dir: store_dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}
