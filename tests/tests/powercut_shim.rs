//! Tests of the power-cut simulation layer itself (`tests/powercut/powercut.c`
//! and `leitsystem_tests::powercut`), using the small C program
//! `tests/powercut/writer.c` as the process that gets "power-cut".

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use leitsystem_tests::powercut::{self, ROOT_ENV, SHADOW_ENV};
use tempfile::TempDir;

/// Compiled shim and writer plus a scratch directory for one test.
struct Fixture {
    dir: TempDir,
    shim: PathBuf,
    writer: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the test");
        let build = dir.path().join("build");
        let shim = powercut::build_shim(&build)
            .unwrap_or_else(|err| panic!("building the power-cut shim: {err:#}"));
        let writer = compile_writer(&build)
            .unwrap_or_else(|err| panic!("building the writer helper: {err:#}"));
        Fixture { dir, shim, writer }
    }

    /// A fresh, empty directory inside the scratch directory.
    fn mkdir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::create_dir(&path).expect("creating a test directory");
        path
    }

    /// Runs the writer with `scenario` under the shim watching `root`, waits
    /// until it reports "ready", SIGKILLs it and returns its stderr.
    fn run_and_kill(&self, root: &Path, shadow: &Path, scenario: &str) -> String {
        let mut command = Command::new(&self.writer);
        command
            .arg(root)
            .arg(scenario)
            .env("LD_PRELOAD", &self.shim)
            .env(ROOT_ENV, root)
            .env(SHADOW_ENV, shadow);
        run_until_ready_then_kill(command)
    }
}

/// Compiles `tests/powercut/writer.c` into `out_dir`.
fn compile_writer(out_dir: &Path) -> Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("powercut/writer.c");
    let program = out_dir.join("writer");
    let output = match Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            bail!("C compiler `cc` not found (install the Debian package `gcc`)")
        }
        Err(err) => return Err(err).context("running `cc`"),
    };
    if !output.status.success() {
        bail!(
            "compiling {} failed: {}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(program)
}

fn run_until_ready_then_kill(mut command: Command) -> String {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the writer");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().expect("writer stdout is piped"))
        .read_line(&mut first_line)
        .expect("reading the writer's stdout");
    // SIGKILL, as a power cut gives no chance to clean up. If the writer
    // already exited (failure), kill fails harmlessly.
    let _ = child.kill();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("writer stderr is piped")
        .read_to_string(&mut stderr)
        .expect("reading the writer's stderr");
    let status = child.wait().expect("waiting for the writer");
    assert_eq!(
        first_line.trim_end(),
        "ready",
        "writer did not reach its end ({status}); stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("powercut["),
        "the shim reported recording errors:\n{stderr}"
    );
    stderr
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// Sorted names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("listing a directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Runs the "basic" scenario in a root that already holds `pre/inner/old`;
/// returns (fixture, real root, materialized root).
fn basic_run() -> (Fixture, PathBuf, PathBuf) {
    let fx = Fixture::new();
    let root = fx.mkdir("root");
    fs::create_dir_all(root.join("pre/inner")).expect("creating pre-existing directories");
    fs::write(root.join("pre/inner/old"), "P").expect("writing a pre-existing file");
    let shadow = fx.dir.path().join("shadow");
    fx.run_and_kill(&root, &shadow, "basic");
    let after = fx.dir.path().join("after");
    powercut::materialize(&shadow, &after).expect("materializing the shadow");
    (fx, root, after)
}

#[test]
fn power_cut_keeps_only_fsynced_data_under_fsynced_names() {
    let (_fx, _root, after) = basic_run();

    assert_eq!(
        read(&after.join("synced")),
        "A",
        "the append after the last fsync must be lost"
    );
    assert_eq!(
        read(&after.join("unsynced")),
        "",
        "a durable name whose data was never fsynced (sync_file_range does not count) is empty"
    );
    assert!(
        !after.join("nameless").exists(),
        "a file whose directory was not fsynced after its creation must not exist"
    );
    assert_eq!(names(&after), ["pre", "synced", "unsynced"]);
}

#[test]
fn files_present_at_process_start_survive_the_cut() {
    let (_fx, _root, after) = basic_run();

    assert_eq!(names(&after.join("pre")), ["inner"]);
    assert_eq!(read(&after.join("pre/inner/old")), "P");
}

#[test]
fn shim_does_not_change_what_the_process_sees() {
    let (_fx, root, _after) = basic_run();

    assert_eq!(
        names(&root),
        ["nameless", "pre", "synced", "unsynced"],
        "the real directory keeps every file"
    );
    assert_eq!(read(&root.join("synced")), "AC");
    assert_eq!(read(&root.join("unsynced")), "B");
    assert_eq!(read(&root.join("nameless")), "D");
    assert_eq!(read(&root.join("pre/inner/old")), "P");
}

#[test]
fn rename_is_durable_only_after_directory_fsync() {
    let fx = Fixture::new();
    let root = fx.mkdir("root");
    let shadow = fx.dir.path().join("shadow");
    fx.run_and_kill(&root, &shadow, "replace");
    let after = fx.dir.path().join("after");
    powercut::materialize(&shadow, &after).expect("materializing the shadow");

    assert_eq!(names(&after), ["sub"]);
    assert_eq!(
        names(&after.join("sub")),
        ["data"],
        "neither the unsynced rename target nor its source may exist"
    );
    assert_eq!(
        read(&after.join("sub/data")),
        "new",
        "tmp + fdatasync + rename + directory fsync replaces atomically"
    );
    assert_eq!(names(&root.join("sub")), ["data", "lost2"]);
}

#[test]
fn sync_makes_everything_before_it_durable() {
    let fx = Fixture::new();
    let root = fx.mkdir("root");
    let shadow = fx.dir.path().join("shadow");
    fx.run_and_kill(&root, &shadow, "sync");
    let after = fx.dir.path().join("after");
    powercut::materialize(&shadow, &after).expect("materializing the shadow");

    assert_eq!(
        names(&after),
        ["early"],
        "files created after sync() are lost"
    );
    assert_eq!(read(&after.join("early")), "E");
}

#[test]
fn second_boot_starts_from_the_materialized_directory() {
    let (fx, _root, after) = basic_run();
    let shadow = fx.dir.path().join("shadow");
    powercut::reset_shadow(&shadow).expect("resetting the shadow");

    fx.run_and_kill(&after, &shadow, "replace");
    let after2 = fx.dir.path().join("after2");
    powercut::materialize(&shadow, &after2).expect("materializing the second boot");

    assert_eq!(names(&after2), ["pre", "sub", "synced", "unsynced"]);
    assert_eq!(read(&after2.join("synced")), "A");
    assert_eq!(read(&after2.join("unsynced")), "");
    assert_eq!(read(&after2.join("sub/data")), "new");
}

#[test]
fn shim_without_environment_passes_through_and_records_nothing() {
    let fx = Fixture::new();
    let root = fx.mkdir("root");
    let mut command = Command::new(&fx.writer);
    command
        .arg(&root)
        .arg("basic")
        .env("LD_PRELOAD", &fx.shim)
        .env_remove(ROOT_ENV)
        .env_remove(SHADOW_ENV);
    run_until_ready_then_kill(command);

    assert_eq!(read(&root.join("synced")), "AC");
    assert_eq!(names(&root), ["nameless", "synced", "unsynced"]);
    let shadow = fx.dir.path().join("shadow");
    assert!(!shadow.exists());
    let err = powercut::materialize(&shadow, &fx.dir.path().join("after"))
        .expect_err("materialize needs a recorded root");
    assert!(
        format!("{err:#}").contains("LD_PRELOAD"),
        "error should hint at the missing shim: {err:#}"
    );
}

#[test]
fn materialize_refuses_a_non_empty_target() {
    let fx = Fixture::new();
    let root = fx.mkdir("root");
    let shadow = fx.dir.path().join("shadow");
    fx.run_and_kill(&root, &shadow, "sync");
    let target = fx.mkdir("occupied");
    fs::write(target.join("stray"), "x").expect("writing a stray file");

    let err = powercut::materialize(&shadow, &target).expect_err("target is not empty");
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");
}
