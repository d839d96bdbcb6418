//! The rig's boot image: Debian's own kernel and modules and busybox (fetched with
//! `apt-get download`, unpacked with `dpkg -x`, cached under `target/rig/`), plus the
//! project's daemon, driver plugins and the rig agent with the shared libraries they need,
//! packed into an initramfs (`newc` cpio) written by [`Cpio`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::escpos::require_tool;

/// The kernel modules the rig loads, with their parameters; their dependencies are found in
/// the modules' own `.modinfo` and loaded first.
pub const MODULES: [(&str, &str); 14] = [
    ("configfs", ""),
    ("libcomposite", ""),
    // Three virtual USB device controllers: one per gadget, so each unplugs alone.
    ("dummy_hcd", "num=3"),
    ("usb_f_hid", ""),
    ("usb_f_acm", ""),
    ("usb_f_printer", ""),
    ("usbhid", ""),
    ("hid_generic", ""),
    ("evdev", ""),
    ("cdc_acm", ""),
    ("usblp", ""),
    ("virtio_pci", ""),
    ("virtio_console", ""),
    // Simulated GPIO chips, built for this kernel by [`super::gpio_sim`].
    ("gpio_sim", ""),
];

/// The driver plugins the rig's daemon loads.
pub const PLUGINS: [&str; 5] = [
    "libleitsystem_hid_scanner.so",
    "libleitsystem_gpio_buttons.so",
    "libleitsystem_serial_scanner.so",
    "libleitsystem_escpos_printer.so",
    "libleitsystem_sim.so",
];

/// Debian udev's stock rules the rig runs (the rest want tools the rig does not carry).
pub const UDEV_RULES: [&str; 4] = [
    "50-udev-default.rules",
    "60-input-id.rules",
    "60-persistent-input.rules",
    "60-serial.rules",
];

/// Where the built image lives.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel (`vmlinuz-*` of the Debian package).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The Debian kernel package it came from.
    pub kernel_package: String,
}

/// Builds the image (the downloads are cached in `cache`, the initramfs is written to `out`).
/// `build` is the release directory with the daemon and plugins, `agent` the rig agent.
pub fn build(cache: &Path, build: &Path, agent: &Path, out: &Path) -> anyhow::Result<Image> {
    for (tool, package) in [
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg", "dpkg"),
        ("strip", "binutils"),
        ("ldd", "libc-bin"),
    ] {
        require_tool(tool, package)?;
    }
    std::fs::create_dir_all(cache)?;
    let kernel_package = match std::env::var("LEITSYSTEM_RIG_KERNEL") {
        Ok(package) if !package.is_empty() => package,
        _ => current_kernel_package()?,
    };
    let (kernel_root, kernel_deb) = unpacked(cache, &kernel_package)?;
    let (busybox_root, _) = unpacked(cache, "busybox-static")?;
    let (udev_root, _) = unpacked(cache, "udev")?;

    let boot = kernel_root.join("boot");
    let kernel = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    let modules_dir = single_subdir(&kernel_root.join("lib/modules"))?;

    let mut cpio = Cpio::default();
    let repo = crate::escpos::repo_root();
    cpio.file("init", &std::fs::read(repo.join("tests/rig/init"))?, 0o755)?;
    for script in ["gadget", "gpio"] {
        cpio.file(
            &format!("rig/{script}"),
            &std::fs::read(repo.join("tests/rig").join(script))?,
            0o755,
        )?;
    }
    for dir in ["proc", "sys", "dev", "tmp", "run", "data", "etc"] {
        cpio.dir(dir)?;
    }
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
    // The groups the packaged udev rules and the daemon's unit use.
    cpio.file(
        "etc/group",
        b"root:x:0:\nlp:x:7:\ndialout:x:20:\ninput:x:101:\nleitsystem:x:990:\n",
        0o644,
    )?;
    // Debian's udev, run by init as on the appliance: its stock rules for the by-id names and
    // the project's packaged rules (systemd/60-leitsystem.rules), as the package installs them.
    let udevadm = udev_root.join("bin/udevadm");
    let udevadm_bytes =
        std::fs::read(&udevadm).with_context(|| format!("reading {}", udevadm.display()))?;
    cpio.file("bin/udevadm", &udevadm_bytes, 0o755)?;
    // systemd-udevd is udevadm under another name.
    cpio.file("lib/systemd/systemd-udevd", &udevadm_bytes, 0o755)?;
    for rules in UDEV_RULES {
        let path = udev_root.join("lib/udev/rules.d").join(rules);
        cpio.file(
            &format!("lib/udev/rules.d/{rules}"),
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            0o644,
        )?;
    }
    cpio.file(
        "lib/udev/rules.d/60-leitsystem.rules",
        &std::fs::read(repo.join("systemd/60-leitsystem.rules"))?,
        0o644,
    )?;
    cpio.file(
        "bin/busybox",
        &std::fs::read(busybox_root.join("bin/busybox"))?,
        0o755,
    )?;

    // Modules, dependencies first, and the list init loads them from.
    let mut index = module_index(&modules_dir)?;
    index.insert(
        "gpio_sim".to_string(),
        super::gpio_sim::build(cache, &kernel_package, &kernel_deb)?,
    );
    let mut order: Vec<String> = Vec::new();
    for (name, _) in MODULES {
        visit_module(name, &index, &mut order, 0)?;
    }
    let mut load = String::new();
    for name in &order {
        let path = &index[name];
        cpio.file(
            &format!("lib/modules/{name}.ko"),
            &std::fs::read(path)?,
            0o644,
        )?;
        let params = MODULES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_default();
        load.push_str(&format!("{name} {params}\n"));
    }
    cpio.file("lib/modules/load", load.as_bytes(), 0o644)?;

    // The project's binaries, without their debug info, and the libraries they link.
    let staging = out.with_extension("staging");
    std::fs::create_dir_all(&staging)?;
    let mut executables: Vec<(PathBuf, String)> = vec![
        (
            build.join("leitsystemd"),
            "opt/leitsystem/leitsystemd".into(),
        ),
        (agent.to_path_buf(), "bin/rig-agent".into()),
    ];
    for plugin in PLUGINS {
        executables.push((
            build.join(plugin),
            format!("opt/leitsystem/plugins/{plugin}"),
        ));
    }
    let mut libraries: BTreeMap<String, PathBuf> = BTreeMap::new();
    for library in linked_libraries(&udevadm)? {
        libraries.insert(library.display().to_string(), library);
    }
    for (source, target) in &executables {
        if !source.is_file() {
            bail!(
                "{} is missing: the rig boots the release build; build it first with \
                 `source .ci/release-packages.sh && cargo build --release \"${{RELEASE_PACKAGES[@]}}\"` \
                 (the README's test command does this)",
                source.display()
            );
        }
        let stripped = staging.join(target.replace('/', "_"));
        run(Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(source))?;
        cpio.file(target, &std::fs::read(&stripped)?, 0o755)?;
        for library in linked_libraries(source)? {
            libraries.insert(library.display().to_string(), library);
        }
    }
    for (name, path) in &libraries {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        cpio.file(name.trim_start_matches('/'), &bytes, 0o755)?;
    }
    let bytes = cpio.finish();
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(Image {
        kernel,
        initramfs: out.to_path_buf(),
        kernel_package,
    })
}

/// The kernel package `linux-image-amd64` depends on today (e.g. `linux-image-6.1.0-57-amd64`).
fn current_kernel_package() -> anyhow::Result<String> {
    let output = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("running apt-cache depends linux-image-amd64")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "apt-cache names no kernel package for linux-image-amd64 (run apt-get update?): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// `<cache>/<package>/`: the package downloaded and unpacked once; also returns the `.deb`.
fn unpacked(cache: &Path, package: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let root = cache.join(package);
    let done = cache.join(format!("{package}.unpacked"));
    if let Ok(deb) = std::fs::read_to_string(&done) {
        let deb = PathBuf::from(deb);
        if deb.is_file() {
            return Ok((root, deb));
        }
    }
    let deb = download(&cache.join("debs"), package, None)?;
    let _ = std::fs::remove_dir_all(&root);
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    std::fs::write(&done, deb.display().to_string())?;
    Ok((root, deb))
}

/// `<debs>/<package>_<version>_*.deb` (any version when `None`), downloaded once.
pub(super) fn download(
    debs: &Path,
    package: &str,
    version: Option<&str>,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(debs)?;
    let prefix = match version {
        Some(version) => format!("{package}_{}_", version.replace(':', "%3a")),
        None => format!("{package}_"),
    };
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && n.ends_with(".deb")
                })
            })
    };
    if let Some(deb) = find() {
        return Ok(deb);
    }
    let spec = match version {
        Some(version) => format!("{package}={version}"),
        None => package.to_string(),
    };
    let output = Command::new("apt-get")
        .args(["download", &spec])
        .current_dir(debs)
        .output()
        .context("running apt-get download")?;
    if !output.status.success() {
        bail!(
            "apt-get download {spec} failed (the rig needs Debian's package {spec}; \
             run apt-get update?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    find().with_context(|| format!("apt-get download left no {prefix}*.deb"))
}

fn single_subdir(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    if dirs.len() != 1 {
        bail!(
            "{} holds {} kernel versions, not one",
            dir.display(),
            dirs.len()
        );
    }
    Ok(dirs.remove(0))
}

/// Module name (with `_` for `-`) → its `.ko` file.
fn module_index(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && let Some(stem) = name.strip_suffix(".ko")
            {
                index.insert(stem.replace('-', "_"), path);
            }
        }
    }
    if index.is_empty() {
        bail!(
            "no uncompressed .ko modules under {} (a kernel with compressed modules needs \
             unpacking first)",
            dir.display()
        );
    }
    Ok(index)
}

/// The `depends=` field of a module's `.modinfo` strings.
fn module_depends(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let key = b"\0depends=";
    let Some(start) = bytes.windows(key.len()).position(|w| w == key) else {
        return Ok(Vec::new());
    };
    let rest = &bytes[start + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect())
}

fn visit_module(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    order: &mut Vec<String>,
    depth: usize,
) -> anyhow::Result<()> {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("module dependencies nest deeper than 32 at {name}");
    }
    let path = index.get(name).with_context(|| {
        format!("the kernel has no module {name} (built in, or a kernel without it?)")
    })?;
    for dependency in module_depends(path)? {
        visit_module(&dependency, index, order, depth + 1)?;
    }
    order.push(name.to_string());
    Ok(())
}

/// The shared libraries `ldd` says a binary loads (with the dynamic loader).
fn linked_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("running ldd {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

pub(super) fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A `newc` cpio archive (the initramfs format): directories are added for every path.
#[derive(Debug, Default)]
pub struct Cpio {
    bytes: Vec<u8>,
    dirs: Vec<String>,
    inode: u32,
}

impl Cpio {
    /// Adds directory `path` (and its parents).
    pub fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.dirs.contains(&prefix) {
                self.dirs.push(prefix.clone());
                let name = prefix.clone();
                self.entry(&name, 0o040_755, &[])?;
            }
        }
        Ok(())
    }

    /// Adds a regular file with `mode` (permission bits).
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> anyhow::Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.entry(path, 0o100_000 | mode, data)
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.inode += 1;
        let size = u32::try_from(data.len()).context("a file over 4 GiB")?;
        let name_size = u32::try_from(name.len() + 1).context("a long name")?;
        let fields = [self.inode, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, name_size, 0];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        let _ = self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}
