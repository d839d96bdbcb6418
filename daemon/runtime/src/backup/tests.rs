//! Backup and restore on real stores in temporary folders.

use super::*;
use leitsystem_core::domain::{Command, CommandRequest, ServiceId};
use leitsystem_core::testing::{demo_catalog, local_instant};

/// The demo catalog's site.
const SITE: &str = "musterstadt-rathaus";

/// A store in `dir` holding `walk_ins` tickets issued on a Monday morning, still open,
/// and its last seq.
fn store_with_tickets(
    dir: &Path,
    walk_ins: u32,
) -> Result<(Store, u64), Box<dyn std::error::Error>> {
    let catalog = Arc::new(demo_catalog());
    let (mut engine, store) = crate::runtime::open_engine(catalog, dir, &StoreOptions::default())?;
    for minute in 0..walk_ins {
        let request = CommandRequest {
            request_id: None,
            source: "test".to_string(),
            command: Command::WalkIn {
                service: ServiceId::new("meldung"),
                priority: 1,
            },
        };
        let at = local_instant("2026-06-15", "09:00") + i64::from(minute) * 60_000;
        engine.execute(&request, at)?;
        store.commit(&engine.take_pending())?;
    }
    Ok((store, engine.state().last_seq))
}

/// A stopped appliance in `dir/data` with `walk_ins` tickets, backed up to `dir/b.lsb`: the
/// data directory, the backup file and the last seq.
fn backed_up(
    dir: &Path,
    walk_ins: u32,
) -> Result<(PathBuf, PathBuf, u64), Box<dyn std::error::Error>> {
    let data = dir.join("data");
    let (store, last_seq) = store_with_tickets(&data, walk_ins)?;
    let file = dir.join("b.lsb");
    write_backup(&store, SITE, last_seq, &file)?;
    store.close()?;
    Ok((data, file, last_seq))
}

/// The file a backup with `header` and `records` is (the format in this module's docs).
fn encode(header: &BackupHeader, records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut body = MAGIC.to_vec();
    body.extend(serde_json::to_vec(header).unwrap_or_else(|e| panic!("{e}")));
    body.push(b'\n');
    for (key, value) in records {
        for part in [key, value] {
            body.extend((part.len() as u32).to_be_bytes());
            body.extend(part);
        }
    }
    let crc = crc32fast::hash(&body);
    body.extend(TRAILER_TAG);
    body.extend((records.len() as u64).to_be_bytes());
    body.extend(crc.to_be_bytes());
    body
}

fn refusal(result: Result<impl std::fmt::Debug, BackupError>) -> String {
    match result {
        Ok(done) => format!("accepted: {done:?}"),
        Err(e) => e.to_string(),
    }
}

fn sample(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let store = Store::open(&dir.join("data"), &StoreOptions::default())?;
    let target = dir.join("b.lsb");
    write_backup(&store, "site-a", 0, &target)?;
    store.close()?;
    Ok(target)
}

#[test]
fn a_backup_reads_back_with_its_header_and_records() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = sample(dir.path())?;
    let read = read_backup(&file)?;
    assert_eq!(read.summary.header.site, "site-a");
    assert!(
        read.records
            .iter()
            .any(|(k, _)| k.as_slice() == b"m/schema"),
        "the schema record is in the backup"
    );
    assert_eq!(read.summary.records as usize, read.records.len());
    Ok(())
}

#[test]
fn a_changed_or_cut_backup_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let file = sample(dir.path())?;
    let good = std::fs::read(&file)?;
    let mut flipped = good.clone();
    let middle = MAGIC.len() + 10;
    flipped[middle] ^= 0x20;
    std::fs::write(&file, &flipped)?;
    let err = read_backup(&file).map(|_| ()).map_err(|e| e.to_string());
    assert!(
        err.as_ref().is_err_and(|e| e.contains("checksum")),
        "{err:?}"
    );
    std::fs::write(&file, &good[..good.len() - 3])?;
    let err = read_backup(&file).map(|_| ()).map_err(|e| e.to_string());
    assert!(
        err.as_ref().is_err_and(|e| e.contains("end marker")),
        "{err:?}"
    );
    std::fs::write(&file, b"hello")?;
    let err = read_backup(&file).map(|_| ()).map_err(|e| e.to_string());
    assert!(
        err.as_ref().is_err_and(|e| e.contains("does not start")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_restored_store_holds_every_event_under_a_new_epoch() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let (store, last_seq) = store_with_tickets(&dir.path().join("data"), 3)?;
    let epoch = store.log_epoch().to_string();
    let file = dir.path().join("b.lsb");
    let written = write_backup(&store, SITE, last_seq, &file)?;
    store.close()?;
    assert_eq!(written.bytes, std::fs::metadata(&file)?.len());
    assert!(
        !partial_path(&file).exists(),
        "the .partial file is renamed"
    );
    let read = read_backup(&file)?;
    assert_eq!(
        (read.summary.records, read.summary.header.last_seq),
        (written.records, last_seq)
    );

    let catalog = Arc::new(demo_catalog());
    let options = StoreOptions::default();
    // Into a directory that does not exist yet, and into an empty one.
    for (name, create) in [("absent", false), ("empty", true)] {
        let target = dir.path().join(name);
        if create {
            std::fs::create_dir(&target)?;
        }
        let restored = restore(&file, &target, false, catalog.clone(), &options)?;
        assert_eq!(restored.events, last_seq, "{name}");
        assert!(restored.replaced.is_none(), "{name}: nothing to keep aside");
        assert!(
            !restored.epoch.is_empty() && restored.epoch != epoch,
            "{name}"
        );
        let (engine, store) = crate::runtime::open_engine(catalog.clone(), &target, &options)?;
        assert_eq!(store.log_epoch(), restored.epoch, "{name}");
        let tickets: Vec<String> = engine
            .state()
            .tickets
            .values()
            .map(|t| t.number.to_string())
            .collect();
        assert_eq!(tickets.len(), 3, "{name}: {tickets:?}");
        store.close()?;
    }
    Ok(())
}

#[test]
fn a_used_target_is_replaced_only_on_request_and_kept_aside()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (data, file, _) = backed_up(dir.path(), 1)?;
    let catalog = Arc::new(demo_catalog());
    let options = StoreOptions::default();

    let refused = refusal(restore(&file, &data, false, catalog.clone(), &options));
    assert!(refused.contains("--replace"), "{refused}");

    let mut other_site = demo_catalog();
    other_site.site_id = "elsewhere".to_string();
    let refused = refusal(restore(&file, &data, true, Arc::new(other_site), &options));
    assert!(refused.contains("the backup is of site"), "{refused}");

    let restored = restore(&file, &data, true, catalog, &options)?;
    let aside = restored.replaced.ok_or("the replaced data was not kept")?;
    assert!(
        aside
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("data.replaced-")),
        "{}",
        aside.display()
    );
    assert!(
        std::fs::read_dir(&aside)?.count() > 0,
        "the kept data is whole"
    );
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    Ok(())
}

#[test]
fn a_restore_that_does_not_verify_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (_, file, _) = backed_up(dir.path(), 2)?;
    let read = read_backup(&file)?;
    let catalog = Arc::new(demo_catalog());
    let options = StoreOptions::default();

    // A ticket's stored view is gone: the replayed log disagrees with the views.
    let without_view: Vec<_> = {
        let mut dropped = false;
        read.records
            .iter()
            .filter(|(k, _)| {
                let drop = !dropped && k.starts_with(b"t/");
                dropped |= drop;
                !drop
            })
            .cloned()
            .collect()
    };
    assert!(
        without_view.len() < read.records.len(),
        "a ticket view exists"
    );
    let damaged = dir.path().join("damaged.lsb");
    std::fs::write(&damaged, encode(&read.summary.header, &without_view))?;
    let target = dir.path().join("t1");
    let refused = refusal(restore(&damaged, &target, false, catalog.clone(), &options));
    assert!(refused.contains("problem(s)"), "{refused}");
    assert!(
        !target.exists(),
        "a refused restore left {}",
        target.display()
    );

    // The header promises more events than the log holds.
    let mut header = read.summary.header.clone();
    header.last_seq += 1;
    let promising = dir.path().join("promising.lsb");
    std::fs::write(&promising, encode(&header, &read.records))?;
    let refused = refusal(restore(
        &promising,
        &dir.path().join("t2"),
        false,
        catalog,
        &options,
    ));
    assert!(
        refused.contains("header says its log ends at seq"),
        "{refused}"
    );
    Ok(())
}

#[test]
fn the_framing_and_the_schema_are_checked() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (_, file, _) = backed_up(dir.path(), 1)?;
    let read = read_backup(&file)?;
    let header = &read.summary.header;
    let check = |name: &str, bytes: Vec<u8>| -> Result<String, std::io::Error> {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes)?;
        Ok(refusal(read_backup(&path).map(|c| c.records.len())))
    };

    let mut short = MAGIC.to_vec();
    short.extend([0u8; TRAILER_LEN - 1]);
    assert!(check("short", short)?.contains("it is cut short ("));
    let mut no_marker = MAGIC.to_vec();
    no_marker.extend([0u8; TRAILER_LEN]);
    assert!(check("no-marker", no_marker)?.contains("end marker"));

    // Records that end inside a length (the checksum and count are right).
    for (tail, what) in [
        (&[0u8; 3][..], "inside a key's length"),
        (&[0u8; 4][..], "inside a value's length"),
    ] {
        let mut bytes = encode(header, &read.records);
        let body_end = bytes.len() - TRAILER_LEN;
        bytes.truncate(body_end);
        bytes.extend(tail);
        let crc = crc32fast::hash(&bytes);
        bytes.extend(TRAILER_TAG);
        bytes.extend((read.records.len() as u64).to_be_bytes());
        bytes.extend(crc.to_be_bytes());
        let refused = check("cut-record", bytes)?;
        assert!(refused.contains(what), "{what}: {refused}");
    }

    let mut newer = header.clone();
    newer.schema_version = SCHEMA_VERSION + 1;
    let refused = check("newer", encode(&newer, &read.records))?;
    assert!(
        refused.contains("restore it with the newer leitsystemd"),
        "{refused}"
    );
    let mut older = header.clone();
    older.schema_version = SCHEMA_VERSION - 1;
    let accepted = check("older", encode(&older, &read.records))?;
    assert_eq!(accepted, format!("accepted: {}", read.records.len()));
    Ok(())
}

#[test]
fn a_running_daemon_keeps_its_two_newest_backups() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (store, last_seq) = store_with_tickets(&dir.path().join("data"), 1)?;
    let mut written = Vec::new();
    for _ in 0..4 {
        written.push(write_backup_in_data_dir(&store, SITE, last_seq)?.path);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Files of others in the folder are neither counted nor deleted.
    let unrelated = store.dir().join(BACKUP_DIR).join("notes.lsb");
    std::fs::write(&unrelated, "mine")?;
    let unrelated_too = store.dir().join(BACKUP_DIR).join("backup-notes.txt");
    std::fs::write(&unrelated_too, "mine")?;
    written.push(write_backup_in_data_dir(&store, SITE, last_seq)?.path);
    let mut kept: Vec<PathBuf> = std::fs::read_dir(store.dir().join(BACKUP_DIR))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    kept.sort();
    let mut expected = vec![unrelated, unrelated_too];
    expected.extend(written[3..].iter().cloned());
    expected.sort();
    assert_eq!(kept, expected);
    store.close()?;
    Ok(())
}

#[test]
fn the_restored_store_belongs_to_the_owner_of_the_data_it_replaces()
-> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir()?;
    let (data, file, _) = backed_up(dir.path(), 1)?;
    // SAFETY: geteuid only reads the process's effective user id.
    let root = unsafe { libc::geteuid() } == 0;
    let mine = std::fs::metadata(&data)?;
    // As root (CI, an appliance's admin) the data is given to other users and groups, the
    // daemon's user being one; otherwise only our own owner can be kept.
    let owners = if root {
        vec![(4242, 4343), (mine.uid(), 4343), (4242, mine.gid())]
    } else {
        vec![(mine.uid(), mine.gid())]
    };
    for (uid, gid) in owners {
        if root {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))?;
        }
        restore(
            &file,
            &data,
            true,
            Arc::new(demo_catalog()),
            &StoreOptions::default(),
        )?;
        let mut found = Vec::new();
        let mut pending = vec![data.clone()];
        while let Some(path) = pending.pop() {
            let meta = std::fs::symlink_metadata(&path)?;
            found.push((path.clone(), meta.uid(), meta.gid()));
            if meta.is_dir() {
                pending.extend(std::fs::read_dir(&path)?.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
        assert!(found.len() > 2, "the restored store has files: {found:?}");
        let wrong: Vec<_> = found
            .iter()
            .filter(|(_, u, g)| (*u, *g) != (uid, gid))
            .collect();
        assert!(
            wrong.is_empty(),
            "not owned by {uid}:{gid} (root: {root}): {wrong:?}"
        );
    }
    Ok(())
}
