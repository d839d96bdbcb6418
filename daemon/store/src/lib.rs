//! The durable store: an append-only event log plus the views the engine reads, on sled.
//! It builds on the core's types (events, the engine's [`PendingCommit`]) and never on the
//! daemon: no runtime, network or config format.
//!
//! A narrow interface: [`Store::open`], [`Store::load`], [`Store::commit`], [`Store::events`],
//! [`Store::personal_data`]. The engine never sees sled's types.
//!
//! **Durability.** A commit is one atomic sled batch (log entries, views and meta together),
//! then `flush()`, then an fsync. sled 0.34's `flush()` ends in `sync_file_range`, which neither
//! persists file metadata nor flushes the drive's cache, and sled writes blob files and renames
//! snapshot files without any directory fsync. So after the flush this module fsyncs every file
//! sled created since the last commit, fsyncs the directories whose listing changed, and finally
//! `fdatasync`s sled's log file. Only then does `commit` return and the caller acknowledge.
//! sled's own periodic flusher is switched off: we flush on every commit anyway.
//!
//! **Damage.** sled cannot tell a damaged log from a torn tail: it silently recovers the prefix
//! before the damage and rewrites the files while opening (measured: bytes overwritten in the
//! middle of `db` -> 17 of 52 events recovered, `db` rewritten, a new snapshot written). So
//! damage must be caught *before* sled opens the store:
//! - After a clean shutdown, `CLEAN` holds the length and CRC-32 of every store file, taken
//!   after sled let go of them. On the next start the files are checked against it first; any
//!   difference is refused and nothing is touched.
//! - After a crash or power cut there is no `CLEAN` (it is removed when the store opens), and
//!   sled's recovery must run. `WITNESS` (refreshed every 30 s and at shutdown) holds a lower
//!   bound of the committed log; a recovery that ends below it is refused as damaged. sled has
//!   rewritten the files by then: restore from a backup.
//!
//! **Layout** of a data directory:
//! - `FORMAT`: `{"format":"leitsystem-store","schema_version":N}`, written last when a store is
//!   created; a non-empty directory without it is refused untouched.
//! - `store/`: the sled database, one tree with prefixed keys:
//!   `m/schema`, `m/meta`, `m/epoch` (the log's epoch), `l/<seq u64 BE>` (log), `t/<day>/<number>` (tickets),
//!   `d/<desk>`, `b/<booking>`, `r/<day>/<request id>` (answered requests),
//!   `p/<booking>` (personal data, kept out of the log, purged after the retention).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use leitsystem_core::domain::PersonalData;

mod files;
mod views;

pub use files::ensure_unused;
use files::{
    describe_difference, file_sums, json, lock_with_retry, open_sled_with_retry, parse_marker,
    remove_interrupted_snapshots, write_marker, write_small_file,
};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Marker file naming a Leitsystem data directory.
pub const FORMAT_FILE: &str = "FORMAT";

/// Manifest of the store files written at clean shutdown.
pub const CLEAN_FILE: &str = "CLEAN";
/// Lower bound of the committed log, for checking recovery after a crash.
pub const WITNESS_FILE: &str = "WITNESS";

const FORMAT_NAME: &str = "leitsystem-store";
const STORE_DIR: &str = "store";

/// Environment variable that switches the fsync off. **Loses acknowledged data on power cuts.**
/// Exists only so the power-cut test can show that it catches a missing fsync.
pub const UNSAFE_NO_FSYNC_ENV: &str = "LEITSYSTEMD_UNSAFE_NO_FSYNC";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory holds files but is not a Leitsystem data directory.
    #[error(
        "{dir} is not a Leitsystem data directory (it holds {found} but no {FORMAT_FILE} file); \
         refusing to touch it: point --data-dir at an empty or new directory"
    )]
    Foreign {
        /// The directory.
        dir: PathBuf,
        /// Some of what it holds.
        found: String,
    },
    /// Written by a newer Leitsystem.
    #[error(
        "{dir} was written with store schema {found}, but this leitsystemd supports up to \
         {supported}; install the newer leitsystemd again (the data was left untouched)"
    )]
    NewerSchema {
        /// The directory.
        dir: PathBuf,
        /// Its schema.
        found: u32,
        /// Ours.
        supported: u32,
    },
    /// The store is damaged.
    #[error("the store in {dir} is damaged: {reason}")]
    Corrupt {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the store.
    #[error("the store in {dir} is locked by another process (waited {waited_ms} ms)")]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// How long we waited.
        waited_ms: u128,
    },
    /// I/O on the data directory failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// sled failed.
    #[error("database error in {dir}: {source}")]
    Database {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: sled::Error,
    },
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache in bytes.
    pub cache_bytes: u64,
    /// How long to retry while another process still holds the lock.
    pub lock_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 8 * 1024 * 1024,
            lock_wait: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct FormatMarker {
    format: String,
    schema_version: u32,
    /// `creating` until a new store is complete; then `ready`.
    #[serde(default)]
    state: MarkerState,
}

/// Whether the store behind a marker was completely created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MarkerState {
    /// Creation began; nothing was ever acknowledged from this store.
    Creating,
    /// Created; the store holds acknowledged data.
    #[default]
    Ready,
}

/// Names a fresh data directory may already hold: our own leftovers of an interrupted first
/// start, and the `lost+found` of a dedicated partition mounted there.
const IGNORED_IN_FRESH_DIR: [&str; 3] = ["lost+found", "FORMAT.tmp", "control.sock"];

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct FileSum {
    path: String,
    len: u64,
    crc32: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct CleanManifest {
    last_seq: u64,
    files: Vec<FileSum>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Witness {
    last_seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PersonalRecord {
    day: Date,
    data: PersonalData,
}

/// The durable store of one site.
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    store_dir: PathBuf,
    log_file: File,
    fsync: bool,
    known_files: Mutex<BTreeSet<PathBuf>>,
    /// The log's epoch (see [`Store::log_epoch`]).
    epoch: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn fsync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

impl Store {
    /// Opens (or creates) the store in `dir`. Refuses foreign, damaged and newer directories
    /// without changing them; waits up to `lock_wait` for a previous process to let go.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let marker_path = dir.join(FORMAT_FILE);
        let store_dir = dir.join(STORE_DIR);
        let marker = match std::fs::read(&marker_path) {
            Ok(bytes) => Some(parse_marker(dir, &bytes)?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&marker_path)(e)),
        };
        let fresh = match &marker {
            Some(marker) if marker.state == MarkerState::Creating => {
                // A first start was interrupted before the store was complete; nothing was ever
                // acknowledged from it, so creation starts over.
                tracing::warn!(dir = %dir.display(), "an interrupted store creation is redone");
                for leftover in [CLEAN_FILE, WITNESS_FILE] {
                    let _ = std::fs::remove_file(dir.join(leftover));
                }
                if store_dir.exists() {
                    std::fs::remove_dir_all(&store_dir).map_err(io_err(&store_dir))?;
                }
                true
            }
            Some(marker) => {
                if marker.schema_version > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        dir: dir.to_path_buf(),
                        found: marker.schema_version,
                        supported: SCHEMA_VERSION,
                    });
                }
                if !store_dir.join("db").is_file() {
                    return Err(StoreError::Corrupt {
                        dir: dir.to_path_buf(),
                        reason: format!("{FORMAT_FILE} is present but {STORE_DIR}/db is missing"),
                    });
                }
                false
            }
            None => {
                let mut found: Vec<String> = std::fs::read_dir(dir)
                    .map_err(io_err(dir))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| !IGNORED_IN_FRESH_DIR.contains(&name.as_str()))
                    .collect();
                if !found.is_empty() {
                    found.sort();
                    found.truncate(3);
                    return Err(StoreError::Foreign {
                        dir: dir.to_path_buf(),
                        found: found.join(", "),
                    });
                }
                // Claim the directory first: from here on an interrupted creation is
                // recognised as ours and redone, never mistaken for foreign data.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    let _ = fsync_path(parent);
                }
                write_marker(dir, SCHEMA_VERSION, MarkerState::Creating)?;
                true
            }
        };

        let clean_path = dir.join(CLEAN_FILE);
        let clean =
            match std::fs::read(&clean_path) {
                Ok(bytes) => Some(serde_json::from_slice::<CleanManifest>(&bytes).map_err(
                    |e| StoreError::Corrupt {
                        dir: dir.to_path_buf(),
                        reason: format!("{CLEAN_FILE} cannot be read: {e}"),
                    },
                )?),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&clean_path)(e)),
            };
        let witness: Option<Witness> = std::fs::read(dir.join(WITNESS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if !fresh {
            // Hold sled's own lock (flock on store/db) while checking and tidying, so no live
            // process is touched; sled takes the lock itself right after.
            let guard = lock_with_retry(&store_dir.join("db"), &store_dir, options.lock_wait)?;
            if let Some(clean) = &clean {
                let found = file_sums(&store_dir)?;
                if found != clean.files {
                    return Err(StoreError::Corrupt {
                        dir: dir.to_path_buf(),
                        reason: format!(
                            "the store files changed since the clean shutdown ({}); nothing was \
                             touched: restore the data directory from a backup",
                            describe_difference(&clean.files, &found)
                        ),
                    });
                }
            }
            if clean.is_some() {
                // sled rewrites files while opening: the manifest must be gone (durably) before,
                // or a crash during the open would leave it next to files it no longer matches.
                std::fs::remove_file(&clean_path).map_err(io_err(&clean_path))?;
                fsync_path(dir)?;
            }
            remove_interrupted_snapshots(&store_dir)?;
            drop(guard);
        }
        let db = open_sled_with_retry(&store_dir, options)?;
        let db_err = |source| StoreError::Database {
            dir: dir.to_path_buf(),
            source,
        };
        let log_path = store_dir.join("db");
        let log_file = File::open(&log_path).map_err(io_err(&log_path))?;
        let fsync = std::env::var_os(UNSAFE_NO_FSYNC_ENV).is_none();
        if !fsync {
            tracing::warn!(
                "{UNSAFE_NO_FSYNC_ENV} is set: commits are NOT fsynced and acknowledged \
                 commands can be lost on a power cut (test use only)"
            );
        }
        let store = Store {
            db,
            dir: dir.to_path_buf(),
            store_dir,
            log_file,
            fsync,
            known_files: Mutex::new(BTreeSet::new()),
            epoch: String::new(),
        };

        let stored_schema = store
            .get_raw(b"m/schema")?
            .map(|v| <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes));
        match (fresh, stored_schema) {
            (true, _) => {
                store
                    .db
                    .insert(b"m/schema", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(db_err)?;
                store.make_durable()?;
                write_marker(dir, SCHEMA_VERSION, MarkerState::Ready)?;
            }
            (false, None) => {
                return Err(StoreError::Corrupt {
                    dir: dir.to_path_buf(),
                    reason: "the database has no schema record".to_string(),
                });
            }
            (false, Some(Err(_))) => {
                return Err(StoreError::Corrupt {
                    dir: dir.to_path_buf(),
                    reason: "the schema record is malformed".to_string(),
                });
            }
            (false, Some(Ok(version))) => {
                if version > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        dir: dir.to_path_buf(),
                        found: version,
                        supported: SCHEMA_VERSION,
                    });
                }
                if version < SCHEMA_VERSION {
                    store.migrate(version)?;
                }
                store.make_durable()?;
            }
        }
        let mut store = store;
        store.epoch = store.load_or_create_epoch()?;
        store.check_log_matches_meta()?;
        let recovered = store.last_log_seq()?;
        if let Some(witness) = witness {
            if recovered < witness.last_seq {
                return Err(StoreError::Corrupt {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "it had confirmed events up to {} but only {recovered} could be \
                         recovered: part of the log is damaged; restore from a backup",
                        witness.last_seq
                    ),
                });
            }
        }
        store.record_witness(recovered)?;
        Ok(store)
    }

    /// The epoch of this store's event log: 16 random hex digits made when the store was
    /// created (or first opened by a build that has epochs), never changed after. Seqs count
    /// from 1 within an epoch; a reinstalled appliance (a new store) starts a new epoch, so a
    /// website knows that seq 1 again is news, not a duplicate.
    pub fn log_epoch(&self) -> &str {
        &self.epoch
    }

    fn load_or_create_epoch(&self) -> Result<String, StoreError> {
        if let Some(value) = self.get_raw(b"m/epoch")? {
            let epoch = String::from_utf8(value.to_vec()).unwrap_or_default();
            if epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(epoch);
            }
            return Err(StoreError::Corrupt {
                dir: self.dir.clone(),
                reason: "the log epoch record is malformed".to_string(),
            });
        }
        let epoch = format!("{:016x}", rand::random::<u64>());
        self.db
            .insert(b"m/epoch", epoch.as_bytes())
            .map_err(|source| StoreError::Database {
                dir: self.dir.clone(),
                source,
            })?;
        self.make_durable()?;
        Ok(epoch)
    }

    /// Calls `f` with every record of the store (key, value) in key order; returns how many.
    /// Used by the daemon's backup (`leitsystem::backup`), on the engine thread between two commits, so
    /// the records are one consistent state.
    pub fn for_each_record<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut count = 0u64;
        for entry in self.db.iter() {
            let (key, value) = entry.map_err(|source| StoreError::Database {
                dir: self.dir.clone(),
                source,
            })?;
            f(&key, &value)?;
            count += 1;
        }
        Ok(count)
    }

    /// Writes a backup's records into this new, empty store (one atomic batch, then durable).
    /// The store keeps its own log epoch (`m/epoch`): a restored log is a new history from the
    /// backup's last seq on (see `daemon/docs/mqtt.md`). Refused when the store holds events.
    pub fn import_records(&self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        if self.last_log_seq()? != 0 {
            return Err(StoreError::Corrupt {
                dir: self.dir.clone(),
                reason: "a backup is only restored into a new, empty store".to_string(),
            });
        }
        let mut batch = sled::Batch::default();
        for (key, value) in records {
            if key.as_slice() != b"m/epoch" {
                batch.insert(key.as_slice(), value.as_slice());
            }
        }
        self.apply_durably(batch)
    }

    /// Applies `batch` atomically and makes it durable: the one write path of commits and of
    /// a restored backup.
    fn apply_durably(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.db
            .apply_batch(batch)
            .map_err(|source| StoreError::Database {
                dir: self.dir.clone(),
                source,
            })?;
        self.make_durable()
    }

    /// Records that the log holds at least `last_seq` durable events (see the module docs).
    pub fn record_witness(&self, last_seq: u64) -> Result<(), StoreError> {
        write_small_file(
            &self.dir,
            WITNESS_FILE,
            &serde_json::to_vec(&Witness { last_seq }).unwrap_or_default(),
        )
    }

    /// Closes the store cleanly: makes everything durable, lets sled go, then writes the
    /// `CLEAN` manifest checked by the next open.
    pub fn close(self) -> Result<(), StoreError> {
        self.make_durable()?;
        let last_seq = self.last_log_seq()?;
        self.record_witness(last_seq)?;
        let Store {
            db, dir, store_dir, ..
        } = self;
        // Dropping the last handle flushes, fsyncs and waits for sled's background
        // truncations; only then are the files final.
        drop(db);
        let manifest = CleanManifest {
            last_seq,
            files: file_sums(&store_dir)?,
        };
        write_small_file(
            &dir,
            CLEAN_FILE,
            &serde_json::to_vec(&manifest).unwrap_or_default(),
        )
    }

    /// Upgrades an older schema step by step. Each step is one atomic batch that also bumps
    /// `m/schema`; the marker file follows once all steps are durable.
    fn migrate(&self, from: u32) -> Result<(), StoreError> {
        // Schema 1 is the first released schema; there is nothing older to migrate from yet.
        // A future schema N adds a `migrate_to_N` step here and bumps SCHEMA_VERSION.
        Err(StoreError::Corrupt {
            dir: self.dir.clone(),
            reason: format!("schema {from} is older than any this build can migrate"),
        })
    }
}

#[cfg(test)]
mod tests;
