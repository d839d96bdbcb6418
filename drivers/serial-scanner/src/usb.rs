//! Finding a serial scanner by its USB id: the kernel's tty class in sysfs
//! (`/sys/class/tty/<name>/device`) leads to the USB interface the tty belongs to; the USB
//! device above it holds `idVendor` and `idProduct`. Works for CDC-ACM (`ttyACM*`, the tty's
//! `device` is the interface) and USB-serial adapters (`ttyUSB*`, one level deeper).

use std::fs;
use std::path::{Path, PathBuf};

use leitsystem_scanner_models::UsbId;

/// Where the kernel lists its ttys.
pub const SYS_CLASS_TTY: &str = "/sys/class/tty";
/// How many levels above a tty's `device` the USB device may be.
const MAX_LEVELS: usize = 4;

fn read_hex(path: &Path) -> Option<u16> {
    let text = fs::read_to_string(path).ok()?;
    u16::from_str_radix(text.trim(), 16).ok()
}

/// The USB id of the tty `name` in the sysfs tty class `class_dir`; `None` when it is not on
/// USB.
pub fn usb_id_of_tty(class_dir: &Path, name: &str) -> Option<UsbId> {
    let mut dir = fs::canonicalize(class_dir.join(name).join("device")).ok()?;
    for _ in 0..MAX_LEVELS {
        if let (Some(vendor), Some(product)) = (
            read_hex(&dir.join("idVendor")),
            read_hex(&dir.join("idProduct")),
        ) {
            return Some(UsbId { vendor, product });
        }
        dir = dir.parent()?.to_path_buf();
    }
    None
}

/// The device file (`dev_dir/<name>`) of the first tty, by name, whose USB id is one of `ids`.
/// The error says which ids were looked for.
pub fn find_tty(class_dir: &Path, dev_dir: &Path, ids: &[UsbId]) -> Result<PathBuf, String> {
    let mut names: Vec<String> = fs::read_dir(class_dir)
        .map_err(|e| format!("cannot list {}: {e}", class_dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .find(|name| usb_id_of_tty(class_dir, name).is_some_and(|usb| ids.contains(&usb)))
        .map(|name| dev_dir.join(name))
        .ok_or_else(|| {
            let ids: Vec<String> = ids.iter().map(UsbId::to_string).collect();
            format!("no serial port with USB id {}", ids.join(" or "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs-shaped tree: a USB device with an interface holding `ttyACM0` (CDC-ACM), a
    /// second device with an adapter's `ttyUSB0` one level deeper, and a tty on no USB.
    fn sysfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        let write = |path: &str, text: &str| {
            let path = r.join(path);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(path, text).expect("write");
        };
        write("devices/usb1/1-1/idVendor", "1eab\n");
        write("devices/usb1/1-1/idProduct", "1a06\n");
        fs::create_dir_all(r.join("devices/usb1/1-1/1-1:1.0/tty/ttyACM0")).expect("mkdir");
        write("devices/usb1/1-2/idVendor", "0403\n");
        write("devices/usb1/1-2/idProduct", "6001\n");
        fs::create_dir_all(r.join("devices/usb1/1-2/1-2:1.0/ttyUSB0")).expect("mkdir");
        fs::create_dir_all(r.join("devices/platform/serial8250/tty/ttyS0")).expect("mkdir");
        fs::create_dir_all(r.join("class/tty/ttyACM0")).expect("mkdir");
        symlink(
            r.join("devices/usb1/1-1/1-1:1.0"),
            r.join("class/tty/ttyACM0/device"),
        )
        .expect("symlink");
        fs::create_dir_all(r.join("class/tty/ttyUSB0")).expect("mkdir");
        symlink(
            r.join("devices/usb1/1-2/1-2:1.0/ttyUSB0"),
            r.join("class/tty/ttyUSB0/device"),
        )
        .expect("symlink");
        fs::create_dir_all(r.join("class/tty/ttyS0")).expect("mkdir");
        symlink(
            r.join("devices/platform/serial8250"),
            r.join("class/tty/ttyS0/device"),
        )
        .expect("symlink");
        fs::create_dir_all(r.join("class/tty/tty1")).expect("mkdir");
        root
    }

    fn id(text: &str) -> UsbId {
        UsbId::parse(text).expect("id")
    }

    #[test]
    fn a_tty_is_found_by_the_usb_id_of_the_device_above_it() {
        let root = sysfs();
        let class = root.path().join("class/tty");
        let dev = Path::new("/dev");
        assert_eq!(usb_id_of_tty(&class, "ttyACM0"), Some(id("1eab:1a06")));
        assert_eq!(usb_id_of_tty(&class, "ttyUSB0"), Some(id("0403:6001")));
        assert_eq!(usb_id_of_tty(&class, "ttyS0"), None);
        assert_eq!(usb_id_of_tty(&class, "tty1"), None);
        assert_eq!(
            find_tty(&class, dev, &[id("0c2e:0700"), id("1eab:1a06")]),
            Ok(PathBuf::from("/dev/ttyACM0"))
        );
        assert_eq!(
            find_tty(&class, dev, &[id("0403:6001")]),
            Ok(PathBuf::from("/dev/ttyUSB0"))
        );
        let missing = find_tty(&class, dev, &[id("1eab:1a03")]).expect_err("not there");
        assert!(missing.contains("1eab:1a03"), "{missing}");
        let no_sysfs = find_tty(&root.path().join("nowhere"), dev, &[id("1eab:1a06")])
            .expect_err("no class dir");
        assert!(no_sysfs.contains("cannot list"), "{no_sysfs}");
    }
}
