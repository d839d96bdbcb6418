//! Opening, committing, refusing damage and markers.

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
    std::fs::write(dir.path().join("holiday.jpg"), b"not ours").unwrap_or_else(|e| panic!("{e}"));
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
    let first = Store::open(dir.path(), &StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
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
