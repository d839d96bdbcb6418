//! Power-cut simulation for system tests.
//!
//! `kill -9` alone proves nothing about crash safety: the page cache survives
//! and every write the daemon made is still visible. This module, together
//! with the `LD_PRELOAD` shim in `tests/powercut/powercut.c`, models what a
//! real power cut leaves behind: only what was made durable.
//!
//! # Usage
//!
//! 1. [`build_shim`] compiles the shim with the system C compiler.
//! 2. Run the process under test with `LD_PRELOAD=<shim>`,
//!    `POWERCUT_ROOT=<data dir>` ([`ROOT_ENV`]) and
//!    `POWERCUT_SHADOW=<shadow dir>` ([`SHADOW_ENV`]); both absolute paths,
//!    the shadow directory outside the data directory.
//! 3. SIGKILL the process.
//! 4. [`materialize`] rebuilds the data directory "as after the power cut"
//!    from the shadow directory into a new directory.
//! 5. Before the next "boot" (running the process on the materialized
//!    directory), call [`reset_shadow`].
//!
//! # Model
//!
//! Objects are keyed by inode (`"<st_dev>_<st_ino>"`). The shim records into
//! the shadow directory:
//!
//! - **Baseline**: when the shim is loaded (process start), everything under
//!   the root is durable, because it survived the previous cut: every regular
//!   file's content goes to `SHADOW/data/<key>`, every directory's listing to
//!   `SHADOW/dirs/<key>`, and the root's key to `SHADOW/root`.
//! - **File data** becomes durable only at `fsync`/`fdatasync` of that file;
//!   the whole current content is copied at that moment. `write`, `close`,
//!   `sync_file_range` and `msync` make nothing durable.
//! - **Names** become durable only at `fsync`/`fdatasync` of the directory
//!   that contains them: its whole current listing is recorded, one line per
//!   entry, `"<f|d>\t<key>\t<name>\n"` (regular files and directories only).
//! - `sync()` and `syncfs()` make everything under the root durable (the
//!   baseline walk is redone).
//!
//! Rust's `File::sync_all` calls `fsync` and `File::sync_data` calls
//! `fdatasync`, so both are seen by the shim.
//!
//! [`materialize`] starts at the root's key and recreates each durable
//! listing: a `d` entry becomes a directory (empty if it has no durable
//! listing), an `f` entry becomes a file with the durable content of its
//! inode, or an empty file if its data was never made durable. Entries not in
//! a durable listing do not exist after the cut.
//!
//! # Caveats
//!
//! - Keys are inode numbers: if an inode number is reused by a new file
//!   whose data is never synced, the old inode's durable data is used.
//! - A rename is durable once the target directory is fsynced; if the source
//!   directory (of a cross-directory rename) is not fsynced as well, the
//!   entry appears in both places. Hard links become independent copies.
//! - Modes, ownership, timestamps, symlinks and special files are not
//!   modelled; writes through `O_SYNC`/`O_DSYNC` descriptors, raw syscalls
//!   and io_uring are not seen (the model is then more pessimistic than
//!   reality, or misses durability points).
//! - A child process that inherits `LD_PRELOAD` and the variables runs the
//!   baseline walk again, marking everything durable at that moment.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Environment variable naming the watched directory (the data directory).
pub const ROOT_ENV: &str = "POWERCUT_ROOT";

/// Environment variable naming the shadow directory that records durable state.
pub const SHADOW_ENV: &str = "POWERCUT_SHADOW";

/// Compiles the shim (`tests/powercut/powercut.c`) with the system `cc` into
/// `out_dir` and returns the path of the resulting `libpowercut.so`.
///
/// Fails with a message naming the Debian package `gcc` if `cc` is missing.
pub fn build_shim(out_dir: &Path) -> Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("powercut/powercut.c");
    fs::create_dir_all(out_dir)
        .with_context(|| format!("creating shim output directory {}", out_dir.display()))?;
    let library = out_dir.join("libpowercut.so");
    let mut command = Command::new("cc");
    command
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o"])
        .arg(&library)
        .arg(&source)
        .args(["-ldl", "-lpthread"]);
    let output = match command.output() {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "C compiler `cc` not found; the power-cut shim needs it \
             (install the Debian package `gcc`: apt-get install gcc)"
        ),
        Err(err) => return Err(err).context("running `cc` to build the power-cut shim"),
    };
    let diagnostics = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "compiling {} failed ({}):\n{diagnostics}",
            source.display(),
            output.status
        );
    }
    if !diagnostics.trim().is_empty() {
        eprintln!(
            "warnings while compiling {}:\n{diagnostics}",
            source.display()
        );
    }
    Ok(library)
}

/// Removes `shadow` (if present) and recreates it empty, so that the next
/// "boot" under the shim starts a fresh record.
pub fn reset_shadow(shadow: &Path) -> Result<()> {
    match fs::remove_dir_all(shadow) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("removing shadow {}", shadow.display()));
        }
    }
    fs::create_dir_all(shadow).with_context(|| format!("creating shadow {}", shadow.display()))
}

/// Builds in `target` the directory tree as it would be after a power cut,
/// from the durable state recorded by the shim in `shadow`.
///
/// `target` must not exist or be an empty directory; it is created.
pub fn materialize(shadow: &Path, target: &Path) -> Result<()> {
    let root_file = shadow.join("root");
    let root_key = fs::read_to_string(&root_file).with_context(|| {
        format!(
            "reading {}; was the process run with LD_PRELOAD=<shim>, {ROOT_ENV} and {SHADOW_ENV}?",
            root_file.display()
        )
    })?;
    let root_key = root_key.trim();
    check_key(root_key).with_context(|| format!("in {}", root_file.display()))?;

    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("materialize target {} is not empty", target.display());
            }
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(target)
                .with_context(|| format!("creating target {}", target.display()))?;
        }
        Err(err) => {
            return Err(err)
                .with_context(|| format!("target {} is not a usable directory", target.display()));
        }
    }

    let mut ancestors = Vec::new();
    materialize_dir(shadow, root_key, target, &mut ancestors)
}

/// Recreates the durable listing of directory `key` inside `dir` (which exists).
fn materialize_dir(
    shadow: &Path,
    key: &str,
    dir: &Path,
    ancestors: &mut Vec<String>,
) -> Result<()> {
    if ancestors.iter().any(|a| a == key) {
        bail!(
            "durable listings form a cycle at directory {key} ({}); \
             the model cannot represent this state",
            dir.display()
        );
    }
    let listing_path = shadow.join("dirs").join(key);
    let listing = match fs::read(&listing_path) {
        Ok(listing) => listing,
        // Name durable, listing never recorded: an empty directory.
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(err).with_context(|| format!("reading {}", listing_path.display()));
        }
    };

    ancestors.push(key.to_owned());
    for (index, line) in listing.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let entry = parse_entry(line)
            .with_context(|| format!("line {} of listing {}", index + 1, listing_path.display()))?;
        let path = dir.join(entry.name);
        match entry.kind {
            EntryKind::Directory => {
                fs::create_dir(&path)
                    .with_context(|| format!("creating directory {}", path.display()))?;
                materialize_dir(shadow, entry.key, &path, ancestors)?;
            }
            EntryKind::File => {
                let data = shadow.join("data").join(entry.key);
                let content = match fs::read(&data) {
                    Ok(content) => content,
                    // Name durable, data never synced: an empty file.
                    Err(err) if err.kind() == ErrorKind::NotFound => Vec::new(),
                    Err(err) => {
                        return Err(err).with_context(|| format!("reading {}", data.display()));
                    }
                };
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|mut file| std::io::Write::write_all(&mut file, &content))
                    .with_context(|| format!("writing file {}", path.display()))?;
            }
        }
    }
    ancestors.pop();
    Ok(())
}

enum EntryKind {
    File,
    Directory,
}

struct Entry<'a> {
    kind: EntryKind,
    key: &'a str,
    name: &'a OsStr,
}

/// Parses one `"<f|d>\t<key>\t<name>"` listing line.
fn parse_entry(line: &[u8]) -> Result<Entry<'_>> {
    let mut fields = line.splitn(3, |&b| b == b'\t');
    let (Some(kind), Some(key), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
        bail!("malformed listing line {:?}", String::from_utf8_lossy(line));
    };
    let kind = match kind {
        b"f" => EntryKind::File,
        b"d" => EntryKind::Directory,
        other => bail!("unknown entry type {:?}", String::from_utf8_lossy(other)),
    };
    let key = std::str::from_utf8(key).context("entry key is not UTF-8")?;
    check_key(key)?;
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        bail!("invalid entry name {:?}", String::from_utf8_lossy(name));
    }
    Ok(Entry {
        kind,
        key,
        name: OsStr::from_bytes(name),
    })
}

/// Checks that `key` has the form `"<dev>_<ino>"` (digits only), so it is
/// safe to use as a file name in the shadow directory.
fn check_key(key: &str) -> Result<()> {
    let valid = key.split_once('_').is_some_and(|(dev, ino)| {
        !dev.is_empty()
            && !ino.is_empty()
            && dev.bytes().all(|b| b.is_ascii_digit())
            && ino.bytes().all(|b| b.is_ascii_digit())
    });
    if !valid {
        bail!("invalid object key {key:?}");
    }
    Ok(())
}
