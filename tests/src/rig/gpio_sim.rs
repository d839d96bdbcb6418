//! `gpio-sim` for the rig's kernel, built as an out-of-tree module: Debian's kernels ship
//! neither `CONFIG_GPIO_SIM` nor the `CONFIG_IRQ_SIM` it needs (a bool, so never a module).
//!
//! From Debian's packages of the rig kernel's exact version (`apt-get download`, `dpkg -x`):
//! the headers (`linux-headers-<abi>`, `linux-headers-<base>-common`, `linux-kbuild-<x.y>`)
//! and three files of `linux-source-<x.y>`: `drivers/gpio/gpio-sim.c`, its private
//! `drivers/gpio/gpiolib.h` and `kernel/irq/irq_sim.c`. `irq_sim.c` calls `irq_to_desc`, which
//! the kernel does not export to modules; its one such line becomes `generic_handle_irq`,
//! which does the same (the simulated IRQs' flow handler is `handle_simple_irq`) and is
//! exported. Both files are linked into one `gpio_sim.ko` (`tests/rig/gpio-sim/Kbuild`) with
//! the kernel's own build system and compiler (`gcc-12` for Debian 12's 6.1 kernels), cached
//! under `target/rig/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::image::{download, run};
use crate::escpos::require_tool;

/// The files taken from the kernel source, and where they go in the module's folder.
const SOURCES: [(&str, &str); 3] = [
    ("drivers/gpio/gpio-sim.c", "gpio-sim-main.c"),
    ("drivers/gpio/gpiolib.h", "gpiolib.h"),
    ("kernel/irq/irq_sim.c", "irq_sim.c"),
];

/// The one line of `irq_sim.c` that calls an unexported symbol, and its exported equivalent.
const IRQ_SIM_CALL: (&str, &str) = (
    "handle_simple_irq(irq_to_desc(irqnum));",
    "generic_handle_irq(irqnum);",
);

/// Builds (once; cached in `cache`) `gpio_sim.ko` for `kernel_package`
/// (`linux-image-6.1.0-57-amd64`, downloaded to `kernel_deb`), and returns its path.
pub fn build(cache: &Path, kernel_package: &str, kernel_deb: &Path) -> anyhow::Result<PathBuf> {
    for (tool, package) in [
        ("make", "make"),
        ("gcc-12", "gcc-12"),
        ("tar", "tar"),
        ("xz", "xz-utils"),
        ("dpkg-deb", "dpkg"),
    ] {
        require_tool(tool, package)?;
    }
    let abi = kernel_package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{kernel_package} is not a linux-image-* package"))?;
    let (base, _flavour) = abi
        .rsplit_once('-')
        .with_context(|| format!("kernel ABI {abi} has no flavour"))?;
    let series: String = base.split('.').take(2).collect::<Vec<_>>().join(".");
    let version = deb_field(kernel_deb, "Version")?;
    let dir = cache.join(format!("gpio-sim-{abi}"));
    let module = dir.join("gpio_sim.ko");
    if module.is_file() {
        return Ok(module);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let debs = cache.join("debs");

    // The headers tree as the packages lay it out (usr/src/linux-headers-*, usr/lib/linux-kbuild-*
    // with relative links between them), in one root.
    let tree = dir.join("tree");
    for package in [
        format!("linux-headers-{abi}"),
        format!("linux-headers-{base}-common"),
        format!("linux-kbuild-{series}"),
    ] {
        let deb = download(&debs, &package, Some(&version))?;
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    }
    // The flavour's Makefile includes the common one by its installed, absolute path.
    let kdir = tree.join(format!("usr/src/linux-headers-{abi}"));
    let common = tree.join(format!("usr/src/linux-headers-{base}-common/Makefile"));
    std::fs::write(
        kdir.join("Makefile"),
        format!("include {}\n", common.display()),
    )?;

    let source_deb = download(&debs, &format!("linux-source-{series}"), Some(&version))?;
    let source = dir.join("source");
    run(Command::new("dpkg").arg("-x").arg(&source_deb).arg(&source))?;
    let tarball = source.join(format!("usr/src/linux-source-{series}.tar.xz"));
    let prefix = format!("linux-source-{series}");
    let mut tar = Command::new("tar");
    tar.arg("-xJf").arg(&tarball).arg("-C").arg(&source);
    for (path, _) in SOURCES {
        tar.arg(format!("{prefix}/{path}"));
    }
    run(&mut tar)?;

    let build = dir.join("build");
    std::fs::create_dir_all(&build)?;
    let repo = crate::escpos::repo_root();
    std::fs::copy(repo.join("tests/rig/gpio-sim/Kbuild"), build.join("Kbuild"))?;
    for (path, name) in SOURCES {
        let from = source.join(&prefix).join(path);
        let mut text = std::fs::read_to_string(&from)
            .with_context(|| format!("reading {}", from.display()))?;
        if name == "irq_sim.c" {
            let (call, exported) = IRQ_SIM_CALL;
            if !text.contains(call) {
                bail!(
                    "{} no longer contains `{call}`: the rig's gpio-sim recipe \
                     (tests/src/rig/gpio_sim.rs) needs a look for this kernel",
                    from.display()
                );
            }
            text = text.replace(call, exported);
        }
        std::fs::write(build.join(name), text)?;
    }
    run(Command::new("make")
        .arg("-C")
        .arg(&kdir)
        .arg(format!("M={}", build.display()))
        .arg("modules"))?;
    std::fs::rename(build.join("gpio-sim.ko"), &module)?;
    // The module is all that is kept: the source package alone is 139 MB, unpacked as much.
    for folder in [tree, source, build] {
        let _ = std::fs::remove_dir_all(folder);
    }
    let _ = std::fs::remove_file(source_deb);
    Ok(module)
}

/// A field of a `.deb`'s control file.
fn deb_field(deb: &Path, field: &str) -> anyhow::Result<String> {
    let output = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .with_context(|| format!("running dpkg-deb -f {}", deb.display()))?;
    let value = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || value.is_empty() {
        bail!("{} has no {field} field", deb.display());
    }
    Ok(value)
}
