//! Reading and writing the engine's data: loading the views, the log, personal data, and
//! the durable commit.

use super::{PersonalRecord, Store, StoreError, fsync_path, io_err, json};
use jiff::civil::Date;
use leitsystem_core::domain::{BookingId, EventRecord, Outcome, PersonalData, Ticket};
use leitsystem_core::engine::{AnsweredRequest, LoadedState, Meta, PendingCommit};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

impl Store {
    pub(crate) fn check_log_matches_meta(&self) -> Result<(), StoreError> {
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

    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.db.get(key).map_err(|source| StoreError::Database {
            dir: self.dir.clone(),
            source,
        })
    }

    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
            dir: self.dir.clone(),
            reason: format!("entry {} cannot be read: {e}", String::from_utf8_lossy(key)),
        })
    }

    pub(crate) fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
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

    pub(crate) fn meta(&self) -> Result<Meta, StoreError> {
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
    pub(crate) fn make_durable(&self) -> Result<(), StoreError> {
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
