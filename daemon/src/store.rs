//! The durable store: an append-only event log plus the views the engine reads, on sled.
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
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::civil::Date;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::{BookingId, EventRecord, Outcome, PersonalData, Ticket};
use crate::engine::{AnsweredRequest, LoadedState, Meta, PendingCommit};

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
    /// Used by the backup ([`crate::backup`]), on the engine thread between two commits, so
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

    fn check_log_matches_meta(&self) -> Result<(), StoreError> {
        let meta = self.meta()?;
        let last = self.last_log_seq()?;
        if last != meta.last_seq {
            return Err(StoreError::Corrupt {
                dir: self.dir.clone(),
                reason: format!(
                    "the views end at event {} but the log at event {last}",
                    meta.last_seq
                ),
            });
        }
        Ok(())
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.db.get(key).map_err(|source| StoreError::Database {
            dir: self.dir.clone(),
            source,
        })
    }

    fn decode<T: DeserializeOwned>(&self, key: &[u8], value: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
            dir: self.dir.clone(),
            reason: format!("entry {} cannot be read: {e}", String::from_utf8_lossy(key)),
        })
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(prefix) {
            let (key, value) = item.map_err(|source| StoreError::Database {
                dir: self.dir.clone(),
                source,
            })?;
            out.push(self.decode(&key, &value)?);
        }
        Ok(out)
    }

    fn meta(&self) -> Result<Meta, StoreError> {
        match self.get_raw(b"m/meta")? {
            Some(v) => self.decode(b"m/meta", &v),
            None => Ok(Meta::default()),
        }
    }

    /// Sequence number of the last log entry (0 for an empty log).
    pub fn last_log_seq(&self) -> Result<u64, StoreError> {
        let last = self
            .db
            .scan_prefix(b"l/")
            .next_back()
            .transpose()
            .map_err(|source| StoreError::Database {
                dir: self.dir.clone(),
                source,
            })?;
        match last {
            None => Ok(0),
            Some((key, _)) => {
                let bytes: [u8; 8] =
                    key.get(2..10)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| StoreError::Corrupt {
                            dir: self.dir.clone(),
                            reason: "malformed log key".to_string(),
                        })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    /// Loads the views: meta, today's tickets, desks, live bookings, today's answered requests.
    pub fn load(&self) -> Result<LoadedState, StoreError> {
        let meta = self.meta()?;
        let (tickets, requests) = match meta.day {
            Some(day) => {
                let tickets = self.scan(format!("t/{day}/").as_bytes())?;
                let prefix = format!("r/{day}/");
                let mut requests = Vec::new();
                for item in self.db.scan_prefix(prefix.as_bytes()) {
                    let (key, value) = item.map_err(|source| StoreError::Database {
                        dir: self.dir.clone(),
                        source,
                    })?;
                    let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    // Stores written before fingerprints hold the bare outcome.
                    let answered = match serde_json::from_slice::<AnsweredRequest>(&value) {
                        Ok(answered) => answered,
                        Err(_) => AnsweredRequest {
                            command: String::new(),
                            outcome: self.decode::<Outcome>(&key, &value)?,
                        },
                    };
                    requests.push((id, answered));
                }
                (tickets, requests)
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(LoadedState {
            tickets,
            desks: self.scan(b"d/")?,
            bookings: self.scan(b"b/")?,
            requests,
            meta,
        })
    }

    /// Tickets of a past or present day, as stored.
    pub fn tickets_of(&self, day: Date) -> Result<Vec<Ticket>, StoreError> {
        self.scan(format!("t/{day}/").as_bytes())
    }

    /// Log entries from `from_seq` on, in order.
    pub fn events(
        &self,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<EventRecord, StoreError>> + '_ {
        let mut start = b"l/".to_vec();
        start.extend_from_slice(&from_seq.to_be_bytes());
        self.db
            .range(start..)
            .map(move |item| {
                let (key, value) = item.map_err(|source| StoreError::Database {
                    dir: self.dir.clone(),
                    source,
                })?;
                if !key.starts_with(b"l/") {
                    return Ok(None);
                }
                self.decode(&key, &value).map(Some)
            })
            .take_while(|r| !matches!(r, Ok(None)))
            .filter_map(|r| r.transpose())
    }

    /// Personal data of a booking, if still kept.
    pub fn personal_data(&self, booking: &BookingId) -> Result<Option<PersonalData>, StoreError> {
        let key = format!("p/{booking}");
        match self.get_raw(key.as_bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(
                self.decode::<PersonalRecord>(key.as_bytes(), &v)?.data,
            )),
        }
    }

    /// Writes a commit atomically and durably. When this returns Ok, the commit survives a
    /// crash or power cut.
    pub fn commit(&self, commit: &PendingCommit) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in &commit.records {
            let mut key = b"l/".to_vec();
            key.extend_from_slice(&r.seq.to_be_bytes());
            batch.insert(key, json(r));
        }
        for t in &commit.tickets {
            batch.insert(format!("t/{}/{}", t.day, t.number).as_bytes(), json(t));
        }
        for d in &commit.desks {
            batch.insert(format!("d/{}", d.id).as_bytes(), json(d));
        }
        for b in &commit.bookings {
            batch.insert(format!("b/{}", b.id).as_bytes(), json(b));
        }
        for id in &commit.removed_bookings {
            batch.remove(format!("b/{id}").as_bytes());
        }
        if let Some(before) = commit.purge_requests_before {
            for item in self.db.scan_prefix(b"r/") {
                let (key, _) = item.map_err(|source| StoreError::Database {
                    dir: self.dir.clone(),
                    source,
                })?;
                let day = String::from_utf8_lossy(&key[2..])
                    .chars()
                    .take(10)
                    .collect::<String>();
                if day < before.to_string() {
                    batch.remove(key);
                }
            }
        }
        if let Some(day) = commit.meta.day {
            for (id, answered) in &commit.requests {
                batch.insert(format!("r/{day}/{id}").as_bytes(), json(answered));
            }
        }
        if let Some(before) = commit.purge_personal_before {
            for item in self.db.scan_prefix(b"p/") {
                let (key, value) = item.map_err(|source| StoreError::Database {
                    dir: self.dir.clone(),
                    source,
                })?;
                let record: PersonalRecord = self.decode(&key, &value)?;
                if record.day < before {
                    batch.remove(key);
                }
            }
        }
        for booking in &commit.erase_personal {
            batch.remove(format!("p/{booking}").as_bytes());
        }
        for (booking, day, data) in &commit.personal {
            let record = PersonalRecord {
                day: *day,
                data: data.clone(),
            };
            batch.insert(format!("p/{booking}").as_bytes(), json(&record));
        }
        batch.insert(b"m/meta".as_slice(), json(&commit.meta));
        self.apply_durably(batch)
    }

    /// Flushes sled and fsyncs what sled's flush leaves volatile (see the module docs).
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that flushes sled, followed by the fsyncs that make it durable"
    )]
    fn make_durable(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|source| StoreError::Database {
            dir: self.dir.clone(),
            source,
        })?;
        if !self.fsync {
            return Ok(());
        }
        let mut known = self
            .known_files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for dir in [self.store_dir.clone(), self.store_dir.join("blobs")] {
            let mut now_present = BTreeSet::new();
            match std::fs::read_dir(&dir) {
                Ok(entries) => {
                    for entry in entries {
                        let entry = entry.map_err(io_err(&dir))?;
                        now_present.insert(entry.path());
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            }
            let known_here: BTreeSet<PathBuf> = known
                .iter()
                .filter(|p| p.parent() == Some(dir.as_path()))
                .cloned()
                .collect();
            if known_here == now_present {
                continue;
            }
            for path in now_present.difference(&known_here) {
                if path.is_file() {
                    fsync_path(path)?;
                }
            }
            fsync_path(&dir)?;
            for gone in known_here.difference(&now_present) {
                known.remove(gone);
            }
            known.extend(now_present);
        }
        self.log_file
            .sync_data()
            .map_err(io_err(&self.store_dir.join("db")))
    }

    /// Size of the store on disk in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db
            .size_on_disk()
            .map_err(|source| StoreError::Database {
                dir: self.dir.clone(),
                source,
            })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Serialises a store value; `serde_json` cannot fail on these plain data types (string keys,
/// no floats), so an empty value here would be a programming error caught by the tests.
fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn parse_marker(dir: &Path, bytes: &[u8]) -> Result<FormatMarker, StoreError> {
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

fn write_marker(dir: &Path, schema_version: u32, state: MarkerState) -> Result<(), StoreError> {
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
fn write_small_file(dir: &Path, name: &str, body: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(body).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    fsync_path(dir)
}

/// Length and CRC-32 of every file below `root`, sorted by path.
fn file_sums(root: &Path) -> Result<Vec<FileSum>, StoreError> {
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
fn crc_of_file(path: &Path) -> Result<(u64, u32), StoreError> {
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

fn describe_difference(expected: &[FileSum], found: &[FileSum]) -> String {
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

fn lock_with_retry(path: &Path, dir: &Path, wait: Duration) -> Result<File, StoreError> {
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
fn remove_interrupted_snapshots(store_dir: &Path) -> Result<(), StoreError> {
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

fn open_sled_with_retry(store_dir: &Path, options: &StoreOptions) -> Result<sled::Db, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_epoch_stays_with_the_store_and_a_new_store_gets_another() {
        let options = StoreOptions::default();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = Store::open(dir.path(), &options).unwrap_or_else(|e| panic!("{e}"));
        let epoch = first.log_epoch().to_string();
        assert_eq!(epoch.len(), 16);
        first.close().unwrap_or_else(|e| panic!("{e}"));
        let again = Store::open(dir.path(), &options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.log_epoch(), epoch, "the epoch changed on reopening");
        again.close().unwrap_or_else(|e| panic!("{e}"));
        let other_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let other = Store::open(other_dir.path(), &options).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(other.log_epoch(), epoch, "a new store reused the epoch");
    }

    #[test]
    fn foreign_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("holiday.jpg"), b"not ours")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Store::open(dir.path(), &StoreOptions::default()).err();
        assert!(matches!(err, Some(StoreError::Foreign { .. })), "{err:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("holiday.jpg")]);
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        drop(Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}")));
        std::fs::write(
            dir.path().join(FORMAT_FILE),
            br#"{"format":"leitsystem-store","schema_version":99}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = Store::open(dir.path(), &StoreOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("schema 99"), "{err}");
        assert!(err.contains("supports up to 1"), "{err}");
    }

    #[test]
    fn an_interrupted_snapshot_does_not_stop_the_store_from_opening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        drop(Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}")));
        // What a crash while sled writes a snapshot leaves behind: a partial, unrenamed file.
        let partial = dir.path().join("store/snap.00000000FFFFFFFF.generating");
        std::fs::write(&partial, b"partial").unwrap_or_else(|e| panic!("{e}"));
        Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!partial.exists());
    }

    #[test]
    fn a_second_opener_waits_for_the_lock_then_reports_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first =
            Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let options = StoreOptions {
            lock_wait: Duration::from_millis(200),
            ..StoreOptions::default()
        };
        let err = Store::open(dir.path(), &options).err();
        assert!(matches!(err, Some(StoreError::Locked { .. })), "{err:?}");
        drop(first);
        // Once the holder is gone the store opens.
        Store::open(dir.path(), &options).unwrap_or_else(|e| panic!("{e}"));
    }
}
