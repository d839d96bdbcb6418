//! The outbox's cursor: the highest event sequence number the broker acknowledged with
//! everything before it. The outbox itself is the event log; only this number is kept, in
//! `<data_dir>/mqtt-outbox.json`, written atomically (temporary file, fsync, rename, fsync of
//! the directory). Losing a recent update only republishes events the subscriber drops by seq.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the cursor in the data directory.
pub const CURSOR_FILE: &str = "mqtt-outbox.json";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorFile {
    v: u32,
    acked_seq: u64,
    /// The log epoch the seq counts in (absent in files written before epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

/// Where the cursor lives.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
    epoch: String,
}

impl Cursor {
    /// The cursor of the data directory `data_dir`.
    pub fn in_dir(data_dir: &Path, epoch: &str) -> Self {
        Self {
            path: data_dir.join(CURSOR_FILE),
            epoch: epoch.to_string(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the cursor; 0 when there is no file yet.
    pub fn load(&self) -> Result<u64, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let file = serde_json::from_slice::<CursorFile>(&bytes)
                    .map_err(|e| format!("{} is damaged: {e}", self.path.display()))?;
                match file.epoch {
                    // The cursor of another log (the store was replaced): start over.
                    Some(epoch) if epoch != self.epoch => {
                        tracing::warn!(
                            path = %self.path.display(),
                            cursor_epoch = %epoch,
                            log_epoch = %self.epoch,
                            "the outbox cursor belongs to another event log; publishing from seq 1"
                        );
                        Ok(0)
                    }
                    _ => Ok(file.acked_seq),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Writes the cursor atomically and durably.
    pub fn store(&self, acked_seq: u64) -> std::io::Result<()> {
        let temp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec(&CursorFile {
            v: 1,
            acked_seq,
            epoch: Some(self.epoch.clone()),
        })
        .map_err(std::io::Error::other)?;
        {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&body)?;
            file.sync_all()?;
        }
        std::fs::rename(&temp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_starts_at_zero() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cursor = Cursor::in_dir(dir.path(), "00000000000000e1");
        assert_eq!(cursor.load()?, 0);
        cursor.store(42)?;
        assert_eq!(cursor.load()?, 42);
        // Another log's cursor (a new store in the same directory) starts over; one written
        // before epochs is taken as it is.
        assert_eq!(Cursor::in_dir(dir.path(), "00000000000000e2").load()?, 0);
        std::fs::write(cursor.path(), br#"{"v":1,"acked_seq":7}"#)?;
        assert_eq!(cursor.load()?, 7);
        std::fs::write(cursor.path(), b"{garbage")?;
        assert!(cursor.load().is_err());
        Ok(())
    }
}
