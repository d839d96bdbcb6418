//! QR scanner models as data, shared by the scanner drivers (`hid-scanner`, `serial-scanner`).
//!
//! A scanner often has one USB product id per interface mode: USB keyboard, USB serial port
//! (CDC-ACM), and modes neither driver reads (HID POS, IBM SurePOS, ...). The built-in table,
//! `models.toml` (embedded, parsed once), lists those ids per model, so a driver can find a
//! scanner by its model ([`lookup`]) and say what is wrong when a configured id is the scanner in
//! another mode ([`identify`]), and choose the scanner from a driver's options ([`select`]).
//! This crate is pure data and lookups: it never opens a device.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

const MODELS_TOML: &str = include_str!("models.toml");

/// A USB vendor and product id; `Debug` and `Display` both print `vvvv:pppp` as `lsusb` does
/// (the drivers log their settings with `Debug`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UsbId {
    /// The vendor id (`idVendor`).
    pub vendor: u16,
    /// The product id (`idProduct`).
    pub product: u16,
}

impl UsbId {
    /// Parses `"vvvv:pppp"`: four hex digits each, as `lsusb` prints them.
    pub fn parse(text: &str) -> Option<UsbId> {
        let (vendor, product) = text.split_once(':')?;
        let hex = |s: &str| {
            (s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u16::from_str_radix(s, 16).ok())
                .flatten()
        };
        Some(UsbId {
            vendor: hex(vendor)?,
            product: hex(product)?,
        })
    }
}

impl fmt::Debug for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.product)
    }
}

/// How a scanner presents itself on USB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A USB keyboard (HID): `drivers/hid-scanner`.
    Keyboard,
    /// A USB serial port (CDC-ACM): `drivers/serial-scanner`.
    Serial,
    /// A mode neither driver reads, by its name ("HID POS", "IBM SurePOS", ...).
    Other(String),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Keyboard => f.write_str("USB keyboard mode"),
            Mode::Serial => f.write_str("USB serial (CDC) mode"),
            Mode::Other(name) => write!(f, "{name} mode"),
        }
    }
}

/// One scanner model: its name and its USB ids per mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The model's id in the table (`newland-hr22`): what a device's `model` option names.
    pub id: String,
    /// Human-readable model name.
    pub name: String,
    /// Ids in USB keyboard mode.
    pub keyboard: Vec<UsbId>,
    /// Ids in USB serial mode.
    pub serial: Vec<UsbId>,
    /// Ids of the other modes, with the mode's name.
    pub other_modes: Vec<(UsbId, String)>,
}

impl Model {
    /// Every id of the model with its mode.
    pub fn ids(&self) -> impl Iterator<Item = (UsbId, Mode)> + '_ {
        let keyboard = self.keyboard.iter().map(|id| (*id, Mode::Keyboard));
        let serial = self.serial.iter().map(|id| (*id, Mode::Serial));
        let other = self
            .other_modes
            .iter()
            .map(|(id, name)| (*id, Mode::Other(name.clone())));
        keyboard.chain(serial).chain(other)
    }

    /// The ids of `mode` (keyboard or serial; empty for the others).
    pub fn ids_in(&self, mode: &Mode) -> &[UsbId] {
        match mode {
            Mode::Keyboard => &self.keyboard,
            Mode::Serial => &self.serial,
            Mode::Other(_) => &[],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    name: String,
    #[serde(default)]
    keyboard: Vec<String>,
    #[serde(default)]
    serial: Vec<String>,
    #[serde(default)]
    other_modes: BTreeMap<String, String>,
}

fn parse_ids(model: &str, field: &str, ids: &[String]) -> Result<Vec<UsbId>, String> {
    ids.iter()
        .map(|text| {
            UsbId::parse(text).ok_or_else(|| {
                format!("model '{model}': {field} id \"{text}\" is not \"vvvv:pppp\" in hex")
            })
        })
        .collect()
}

/// Parses and checks a model table in the format of `models.toml`: ids well-formed, every
/// model with at least one keyboard or serial id, and no id in two places.
pub fn parse(text: &str) -> Result<Vec<Model>, String> {
    let entries: BTreeMap<String, ModelEntry> =
        toml::from_str(text).map_err(|e| format!("the scanner model table is invalid: {e}"))?;
    let mut models = Vec::with_capacity(entries.len());
    let mut seen: BTreeMap<UsbId, String> = BTreeMap::new();
    for (id, entry) in entries {
        let mut other_modes = Vec::new();
        for (usb, mode) in &entry.other_modes {
            let usb = UsbId::parse(usb).ok_or_else(|| {
                format!("model '{id}': other_modes id \"{usb}\" is not \"vvvv:pppp\" in hex")
            })?;
            other_modes.push((usb, mode.clone()));
        }
        let model = Model {
            keyboard: parse_ids(&id, "keyboard", &entry.keyboard)?,
            serial: parse_ids(&id, "serial", &entry.serial)?,
            other_modes,
            name: entry.name,
            id,
        };
        if model.keyboard.is_empty() && model.serial.is_empty() {
            return Err(format!(
                "model '{}' has neither a keyboard nor a serial id",
                model.id
            ));
        }
        for (usb, _) in model.ids() {
            if let Some(other) = seen.insert(usb, model.id.clone()) {
                return Err(format!(
                    "USB id {usb} is listed twice (models '{other}' and '{}')",
                    model.id
                ));
            }
        }
        models.push(model);
    }
    Ok(models)
}

/// The built-in models, parsed once from the embedded `models.toml`, sorted by id.
pub fn builtin() -> Result<&'static [Model], String> {
    static PARSED: OnceLock<Result<Vec<Model>, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| parse(MODELS_TOML))
        .as_deref()
        .map_err(Clone::clone)
}

/// The built-in model `id`; an unknown id is an error listing the known ones.
pub fn lookup(id: &str) -> Result<&'static Model, String> {
    let models = builtin()?;
    models.iter().find(|m| m.id == id).ok_or_else(|| {
        let known: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
        format!(
            "unknown scanner model '{id}'; known models: {}",
            known.join(", ")
        )
    })
}

/// The built-in model with USB id `usb`, and the mode that id means.
pub fn identify(usb: UsbId) -> Option<(&'static Model, Mode)> {
    builtin().ok()?.iter().find_map(|model| {
        model
            .ids()
            .find(|(id, _)| *id == usb)
            .map(|(_, mode)| (model, mode))
    })
}

/// Why a configured USB id cannot be read in `wanted` mode, if the table knows it as the
/// scanner in another mode: an admin-readable sentence naming the model, the mode it is in,
/// and what to do. `None` when the id is unknown or in the wanted mode.
pub fn wrong_mode(usb: UsbId, wanted: &Mode) -> Option<String> {
    let (model, mode) = identify(usb)?;
    if &mode == wanted {
        return None;
    }
    let fix = match (&mode, wanted) {
        (Mode::Serial, Mode::Keyboard) => {
            "use the serial-scanner driver for it, or set the scanner to USB keyboard mode with the setup code in its manual".to_string()
        }
        (Mode::Keyboard, Mode::Serial) => {
            "use the hid-scanner driver for it, or set the scanner to USB serial (CDC) mode with the setup code in its manual".to_string()
        }
        _ => format!(
            "neither scanner driver reads that mode: set the scanner to {wanted} with the setup code in its manual"
        ),
    };
    let ids: Vec<String> = model.ids_in(wanted).iter().map(UsbId::to_string).collect();
    let then = if ids.is_empty() {
        String::new()
    } else {
        format!(" (then it shows USB id {})", ids.join(" or "))
    };
    Some(format!(
        "USB id {usb} is the {} in {mode}: {fix}{then}",
        model.name
    ))
}

/// How a scanner driver finds its scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A device file.
    Path(PathBuf),
    /// The first device with one of these USB ids (in the driver's mode).
    Usb(Vec<UsbId>),
}

/// What a driver's messages about its `device` option give as examples.
#[derive(Debug, Clone, Copy)]
pub struct DeviceHelp {
    /// Where a bare `device` name is looked up (`/dev/input/by-id`).
    pub by_id_dir: &'static str,
    /// A device path to show (`/dev/input/event3`).
    pub device_example: &'static str,
    /// A USB id to show (`0c2e:0b61`).
    pub usb_example: &'static str,
}

/// The scanner a driver reading `mode` is to use, from its options `device` (a path, or a
/// name in `help.by_id_dir`), `usb_id` or `model` (each `None` when not given): exactly one of
/// them; a USB id the table knows as the scanner in another mode, and a model without `mode`,
/// are refused with what to do.
pub fn select(
    device: Option<String>,
    usb_id: Option<String>,
    model: Option<String>,
    mode: &Mode,
    help: &DeviceHelp,
) -> Result<Selector, String> {
    match (device, usb_id, model) {
        (Some(d), None, None) if d.contains('/') => Ok(Selector::Path(PathBuf::from(d))),
        (Some(d), None, None) => Ok(Selector::Path(Path::new(help.by_id_dir).join(d))),
        (None, Some(id), None) => {
            let usb = UsbId::parse(&id).ok_or_else(|| {
                format!(
                    "option 'usb_id' must be \"vvvv:pppp\" in hex (e.g. \"{}\"), not \"{id}\"",
                    help.usb_example
                )
            })?;
            match wrong_mode(usb, mode) {
                Some(advice) => Err(format!("option 'usb_id': {advice}")),
                None => Ok(Selector::Usb(vec![usb])),
            }
        }
        (None, None, Some(model)) => {
            let model = lookup(&model).map_err(|e| format!("option 'model': {e}"))?;
            let ids = model.ids_in(mode);
            if ids.is_empty() {
                let (mode_name, other_driver) = match mode {
                    Mode::Keyboard => ("USB keyboard", "serial-scanner"),
                    Mode::Serial => ("USB serial", "hid-scanner"),
                    Mode::Other(name) => (name.as_str(), "another"),
                };
                return Err(format!(
                    "option 'model': the {} has no {mode_name} mode; use the {other_driver} driver",
                    model.name
                ));
            }
            Ok(Selector::Usb(ids.to_vec()))
        }
        (None, None, None) => Err(format!(
            "option 'device' (e.g. \"{}\" or a {} name), 'usb_id' (\"vvvv:pppp\") or 'model' is missing",
            help.device_example, help.by_id_dir
        )),
        _ => Err("give one of the options 'device', 'usb_id' and 'model', not several".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_parses_and_every_model_is_found_by_its_ids() {
        let models = builtin().expect("models.toml parses");
        assert!(models.len() >= 8, "{} models", models.len());
        for model in models {
            for (usb, mode) in model.ids() {
                let (found, found_mode) = identify(usb).expect("listed id is identified");
                assert_eq!((found.id.as_str(), found_mode), (model.id.as_str(), mode));
            }
        }
        assert_eq!(
            lookup("newland-hr22").map(|m| m.keyboard.clone()),
            Ok(vec![UsbId {
                vendor: 0x1eab,
                product: 0x1a03
            }])
        );
    }

    #[test]
    fn usb_ids_are_parsed_strictly() {
        assert_eq!(
            UsbId::parse("0c2e:0B61"),
            Some(UsbId {
                vendor: 0x0c2e,
                product: 0x0b61
            })
        );
        for bad in [
            "0c2e0b61",
            "c2e:0b61",
            "0c2e:0b611",
            "0x2e:0b61",
            "+c2e:0b61",
            "",
        ] {
            assert_eq!(UsbId::parse(bad), None, "{bad}");
        }
        assert_eq!(
            UsbId {
                vendor: 0x1eab,
                product: 0x0a
            }
            .to_string(),
            "1eab:000a"
        );
        assert_eq!(
            format!("{:?}", UsbId::parse("1eab:1a03").expect("id")),
            "1eab:1a03"
        );
    }

    #[test]
    fn bad_tables_are_refused_with_the_model_named() {
        let cases = [
            ("[a]\nname = \"A\"\n", "model 'a' has neither"),
            (
                "[a]\nname = \"A\"\nkeyboard = [\"12:34\"]\n",
                "model 'a': keyboard id \"12:34\"",
            ),
            (
                "[a]\nname = \"A\"\nkeyboard = [\"1234:0001\"]\n[b]\nname = \"B\"\nserial = [\"1234:0001\"]\n",
                "listed twice (models 'a' and 'b')",
            ),
            (
                "[a]\nname = \"A\"\nserial = [\"1234:0001\"]\nother_modes = { \"x\" = \"POS\" }\n",
                "other_modes id \"x\"",
            ),
            (
                "[a]\nname = \"A\"\nserial = [\"1234:0001\"]\nbaud = 9600\n",
                "unknown field",
            ),
        ];
        for (table, expected) in cases {
            let error = parse(table).expect_err(table);
            assert!(error.contains(expected), "{table}: {error}");
        }
    }

    #[test]
    fn a_scanner_in_the_wrong_mode_gets_advice_naming_model_mode_and_the_id_to_expect() {
        let serial = UsbId::parse("1eab:1a06").expect("id");
        let advice = wrong_mode(serial, &Mode::Keyboard).expect("serial id is the wrong mode");
        assert!(
            advice.contains("Newland HR22")
                && advice.contains("USB serial (CDC) mode")
                && advice.contains("serial-scanner driver")
                && advice.contains("1eab:1a03"),
            "{advice}"
        );
        let pos = UsbId::parse("1eab:1a10").expect("id");
        let advice = wrong_mode(pos, &Mode::Serial).expect("POS id is the wrong mode");
        assert!(
            advice.contains("HID POS mode")
                && advice.contains("neither scanner driver")
                && advice.contains("1eab:1a06"),
            "{advice}"
        );
        let keyboard = UsbId::parse("1eab:1a03").expect("id");
        assert_eq!(wrong_mode(keyboard, &Mode::Keyboard), None);
        let advice = wrong_mode(keyboard, &Mode::Serial).expect("keyboard id is the wrong mode");
        assert!(
            advice.contains("USB keyboard mode")
                && advice.contains("hid-scanner driver")
                && advice.contains("1eab:1a06"),
            "{advice}"
        );
        assert_eq!(
            wrong_mode(UsbId::parse("dead:beef").expect("id"), &Mode::Keyboard),
            None
        );
    }

    #[test]
    fn a_driver_s_scanner_is_chosen_by_exactly_one_of_device_usb_id_and_model() {
        let help = DeviceHelp {
            by_id_dir: "/dev/serial/by-id",
            device_example: "/dev/ttyACM0",
            usb_example: "1eab:1a06",
        };
        let some = |s: &str| Some(s.to_string());
        let serial = |device, usb_id, model| select(device, usb_id, model, &Mode::Serial, &help);
        assert_eq!(
            serial(some("/dev/ttyACM1"), None, None),
            Ok(Selector::Path(PathBuf::from("/dev/ttyACM1")))
        );
        assert_eq!(
            serial(some("usb-Newland-if00"), None, None),
            Ok(Selector::Path(PathBuf::from(
                "/dev/serial/by-id/usb-Newland-if00"
            )))
        );
        let id = |text| UsbId::parse(text).expect("id");
        assert_eq!(
            serial(None, some("0403:6001"), None),
            Ok(Selector::Usb(vec![id("0403:6001")]))
        );
        // The model's ids of the driver's mode only.
        assert_eq!(
            serial(None, None, some("newland-hr22")),
            Ok(Selector::Usb(vec![id("1eab:1a06")]))
        );
        assert_eq!(
            select(None, None, some("newland-hr22"), &Mode::Keyboard, &help),
            Ok(Selector::Usb(vec![id("1eab:1a03")]))
        );
        let refused = |result: Result<Selector, String>| result.expect_err("refused");
        assert_eq!(
            refused(serial(None, some("1eab"), None)),
            "option 'usb_id' must be \"vvvv:pppp\" in hex (e.g. \"1eab:1a06\"), not \"1eab\""
        );
        let advice = refused(serial(None, some("1eab:1a03"), None));
        assert!(
            advice.starts_with("option 'usb_id': USB id 1eab:1a03 is the Newland HR22")
                && advice.contains("hid-scanner driver"),
            "{advice}"
        );
        assert_eq!(
            refused(serial(None, None, None)),
            "option 'device' (e.g. \"/dev/ttyACM0\" or a /dev/serial/by-id name), 'usb_id' \
             (\"vvvv:pppp\") or 'model' is missing"
        );
        assert!(refused(serial(None, None, some("nope"))).starts_with("option 'model': unknown"));
        for (device, usb_id, model) in [
            (some("/dev/x"), some("1eab:1a06"), None),
            (some("/dev/x"), None, some("newland-hr22")),
            (None, some("1eab:1a06"), some("newland-hr22")),
        ] {
            assert_eq!(
                refused(serial(device, usb_id, model)),
                "give one of the options 'device', 'usb_id' and 'model', not several"
            );
        }
    }
}
