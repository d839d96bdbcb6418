//! The device tables (scanner models, printer profiles) against two things we did not write
//! ourselves: the USB ID repository (Debian package `usb.ids`), and the udev rules the package
//! installs (`systemd/60-leitsystem.rules`), as udev reads them.
//!
//! - every id in the tables is in usb.ids under its vendor, and where usb.ids names the mode
//!   (keyboard, serial, HID POS, ...), it is the mode the table gives: a typo or a mode mixed up
//!   would send an admin the wrong advice;
//! - every keyboard-mode vendor has an input rule naming `/dev/leitsystem/scanner0`, every
//!   serial-mode vendor a ttyACM rule naming `serial-scanner0` that keeps ModemManager away,
//!   every printer profile's vendor a usblp rule naming `printer0`, all for the daemon's group;
//! - and the other way round: no rule names a vendor no table knows (a rule nobody can check).

use std::collections::BTreeMap;
use std::path::Path;

use leitsystem_escpos_printer::profiles;
use leitsystem_scanner_models::{self as models, Mode, UsbId};

/// Where Debian's `usb.ids` package puts the repository.
const USB_IDS: &str = "/usr/share/misc/usb.ids";

/// usb.ids: vendor id → (vendor name, product id → product name).
type UsbIds = BTreeMap<u16, (String, BTreeMap<u16, String>)>;

fn usb_ids() -> UsbIds {
    let text = std::fs::read(USB_IDS).unwrap_or_else(|e| {
        panic!("cannot read {USB_IDS} ({e}): install the Debian package usb.ids (tests/run does)")
    });
    let text = String::from_utf8_lossy(&text);
    let hex4 = |s: &str| {
        (s.len() == 4)
            .then(|| u16::from_str_radix(s, 16).ok())
            .flatten()
    };
    let mut ids = UsbIds::new();
    let mut vendor: Option<u16> = None;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(product_line) = line.strip_prefix('\t') {
            if let (Some(v), Some((id, name))) = (vendor, product_line.split_once("  "))
                && let (Some(id), Some(entry)) = (hex4(id), ids.get_mut(&v))
            {
                entry.1.insert(id, name.to_string());
            }
            continue;
        }
        // A vendor line, or the start of the class lists ("C 00  ..."), which ends vendors.
        vendor = line
            .split_once("  ")
            .and_then(|(id, name)| Some((hex4(id)?, name)))
            .map(|(id, name)| {
                ids.insert(id, (name.to_string(), BTreeMap::new()));
                id
            });
    }
    assert!(ids.len() > 1000, "{USB_IDS} has only {} vendors", ids.len());
    ids
}

/// One rule of the packaged rules file, as key → value of its `==` matches and assignments.
#[derive(Debug)]
struct Rule {
    line: String,
    fields: BTreeMap<String, String>,
}

impl Rule {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    fn vendor(&self) -> Option<u16> {
        u16::from_str_radix(self.get("ATTRS{idVendor}")?, 16).ok()
    }

    fn product(&self) -> Option<u16> {
        u16::from_str_radix(self.get("ATTRS{idProduct}")?, 16).ok()
    }

    /// Whether the rule matches a device with `usb`.
    fn covers(&self, usb: UsbId) -> bool {
        self.vendor() == Some(usb.vendor) && self.product().is_none_or(|p| p == usb.product)
    }
}

fn rules() -> Vec<Rule> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/60-leitsystem.rules");
    let text = std::fs::read_to_string(&path).expect("the packaged udev rules");
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| {
            let fields = line
                .split(", ")
                .map(|part| {
                    let (key, value) = part
                        .split_once("==")
                        .or_else(|| part.split_once("+="))
                        .or_else(|| part.split_once('='))
                        .unwrap_or_else(|| panic!("not key=value: {part:?} in {line}"));
                    (
                        key.trim().to_string(),
                        value.trim().trim_matches('"').to_string(),
                    )
                })
                .collect();
            Rule {
                line: line.to_string(),
                fields,
            }
        })
        .collect()
}

/// The rules for one kind of device: subsystem and the stable name they give.
fn rules_for<'a>(rules: &'a [Rule], subsystem: &str, link: &str) -> Vec<&'a Rule> {
    rules
        .iter()
        .filter(|r| r.get("SUBSYSTEM") == Some(subsystem) && r.get("SYMLINK") == Some(link))
        .collect()
}

fn printer_ids() -> Vec<(String, UsbId)> {
    let profiles = profiles::builtin().expect("the built-in printer profiles");
    profiles
        .iter()
        .flat_map(|(id, profile)| {
            profile.usb.iter().map(move |text| {
                let usb = UsbId::parse(text)
                    .unwrap_or_else(|| panic!("printer profile '{id}': bad usb id {text:?}"));
                (id.clone(), usb)
            })
        })
        .collect()
}

/// Where usb.ids names a mode, the words that would contradict `mode`.
fn contradicts(mode: &Mode, usb_ids_name: &str) -> bool {
    let name = usb_ids_name.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| name.contains(w));
    match mode {
        Mode::Keyboard => any(&["serial", "cdc", "rs-232", "pos", "oem", "snapi", "ibm"]),
        Mode::Serial => any(&["keyboard", "hid pos", "oem", "snapi", "surepos"]),
        Mode::Other(mode) => !name.contains(&mode.to_lowercase()),
    }
}

#[test]
fn every_scanner_and_printer_id_is_in_usb_ids_with_the_mode_it_names_there() {
    let usb_ids = usb_ids();
    let mut problems = Vec::new();
    let mut checked = 0;
    let scanner_ids = models::builtin()
        .expect("the scanner models")
        .iter()
        .flat_map(|model| {
            model
                .ids()
                .map(move |(usb, mode)| (model.id.clone(), usb, mode))
        });
    let printers = printer_ids()
        .into_iter()
        .map(|(profile, usb)| (profile, usb, None));
    for (owner, usb, mode) in scanner_ids
        .map(|(model, usb, mode)| (model, usb, Some(mode)))
        .chain(printers)
    {
        checked += 1;
        let Some((vendor, products)) = usb_ids.get(&usb.vendor) else {
            problems.push(format!("{owner}: vendor of {usb} is not in usb.ids"));
            continue;
        };
        let Some(product) = products.get(&usb.product) else {
            problems.push(format!(
                "{owner}: {usb} is not in usb.ids (vendor {vendor})"
            ));
            continue;
        };
        if let Some(mode) = mode
            && contradicts(&mode, product)
        {
            problems.push(format!(
                "{owner}: {usb} is \"{product}\" in usb.ids, not {mode}"
            ));
        }
    }
    assert!(checked >= 25, "only {checked} ids checked");
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_udev_rules_name_every_known_device_and_only_those() {
    let rules = rules();
    let keyboards = rules_for(&rules, "input", "leitsystem/scanner0");
    let serials = rules_for(&rules, "tty", "leitsystem/serial-scanner0");
    let printers = rules_for(&rules, "usbmisc", "leitsystem/printer0");
    let mut problems = Vec::new();
    for rule in keyboards.iter().chain(&serials).chain(&printers) {
        if rule.get("GROUP") != Some("leitsystem") || rule.get("MODE") != Some("0660") {
            problems.push(format!("not group leitsystem, 0660: {}", rule.line));
        }
    }
    for rule in &serials {
        if rule.get("ENV{ID_MM_DEVICE_IGNORE}") != Some("1") {
            problems.push(format!("ModemManager would probe: {}", rule.line));
        }
    }
    let models = models::builtin().expect("the scanner models");
    for model in models {
        for (usb, mode) in model.ids() {
            let (wanted, kind) = match mode {
                Mode::Keyboard => (&keyboards, "input"),
                Mode::Serial => (&serials, "ttyACM"),
                Mode::Other(_) => continue,
            };
            if !wanted.iter().any(|r| r.covers(usb)) {
                problems.push(format!("{}: no {kind} rule covers {usb}", model.id));
            }
        }
    }
    let printer_ids = printer_ids();
    for (profile, usb) in &printer_ids {
        if !printers.iter().any(|r| r.covers(*usb)) {
            problems.push(format!(
                "printer profile {profile}: no usblp rule covers {usb}"
            ));
        }
    }
    // The other way round: each rule's vendor is one a table knows in that mode.
    let known = |rule: &Rule, ids: Vec<UsbId>| ids.into_iter().any(|usb| rule.covers(usb));
    for rule in &keyboards {
        if !known(
            rule,
            models.iter().flat_map(|m| m.keyboard.clone()).collect(),
        ) {
            problems.push(format!(
                "no scanner model in keyboard mode has this vendor: {}",
                rule.line
            ));
        }
    }
    for rule in &serials {
        if !known(rule, models.iter().flat_map(|m| m.serial.clone()).collect()) {
            problems.push(format!(
                "no scanner model in serial mode has this vendor: {}",
                rule.line
            ));
        }
    }
    for rule in &printers {
        if !known(rule, printer_ids.iter().map(|(_, usb)| *usb).collect()) {
            problems.push(format!("no printer profile has this vendor: {}", rule.line));
        }
    }
    assert!(
        keyboards.len() >= 5 && serials.len() >= 5 && printers.len() >= 3,
        "rules not found: {} keyboard, {} serial, {} printer",
        keyboards.len(),
        serials.len(),
        printers.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
