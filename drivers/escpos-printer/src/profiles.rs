//! Printer models as data: paper width, QR support, cutter, code pages, status support.
//!
//! The built-in profiles live in `profiles.toml` (embedded in the library, parsed once). A device
//! picks one with the option `profile = "<id>"` and may override single fields
//! (`paper_dots`, `native_qr`, `cutter`, `status`), choose another of the profile's code pages
//! (`code_page = "cp437"`), or describe its printer completely with a `custom_profile` table of
//! the same fields; see [`resolve`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

use oem_cp::code_table::{ENCODING_TABLE_CP437, ENCODING_TABLE_CP850, ENCODING_TABLE_CP858};
use serde::{Deserialize, Serialize};

/// The profile a device gets when its options name none.
pub const DEFAULT_PROFILE: &str = "epson-tm-t20";

/// Narrowest accepted paper width in dots (a 32 mm roll).
pub const MIN_PAPER_DOTS: u32 = 128;
/// Widest accepted paper width in dots (a 112 mm roll at 203 dpi).
pub const MAX_PAPER_DOTS: u32 = 832;

const PROFILES_TOML: &str = include_str!("profiles.toml");

/// What the printer does after the last block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cutter {
    /// Full cut: `GS V 65 n`.
    Full,
    /// Partial cut (one point left uncut): `GS V 66 n`.
    Partial,
    /// No cutter (tear bar): feed 4 lines with `ESC d 4`.
    None,
}

/// A character encoding the driver can produce. Each holds ä ö ü Ä Ö Ü ß.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// IBM PC code page 437 (US): the table every ESC/POS printer has, usually `ESC t 0`.
    Cp437,
    /// Code page 850 (Western Europe).
    Cp850,
    /// Code page 858: 850 with `€` at 0xD5.
    Cp858,
}

impl Encoding {
    /// The name used in profiles and options (`cp437`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Cp437 => "cp437",
            Encoding::Cp850 => "cp850",
            Encoding::Cp858 => "cp858",
        }
    }

    /// The byte for `c`, if this code page holds it (ASCII maps to itself).
    pub fn encode_char(self, c: char) -> Option<u8> {
        let table = match self {
            Encoding::Cp437 => &ENCODING_TABLE_CP437,
            Encoding::Cp850 => &ENCODING_TABLE_CP850,
            Encoding::Cp858 => &ENCODING_TABLE_CP858,
        };
        oem_cp::encode_char_checked(c, table)
    }
}

/// One character table of a printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodePage {
    /// The encoding.
    pub encoding: Encoding,
    /// The printer's number for it in `ESC t n` (vendor-specific).
    pub select: u8,
}

/// The facts about one printer model the driver needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Human-readable model name.
    pub name: String,
    /// Printable width in the printer's dots (576 for 80 mm paper at 203 dpi, 384 for 58 mm;
    /// 512 on the 180 dpi TM-T88).
    pub paper_dots: u32,
    /// Supports `GS ( k` QR codes; else QR codes are sent as raster images.
    pub native_qr: bool,
    /// The cutter.
    pub cutter: Cutter,
    /// Character tables, in order of preference; the first is used.
    pub code_pages: Vec<CodePage>,
    /// Answers `DLE EOT n` real-time status queries.
    pub status: bool,
    /// The USB ids (`"vvvv:pppp"`) of printers this profile fits. The driver does not need
    /// them (it opens the device file it is given); they keep the packaged udev rules true
    /// (tests/tests/device_models.rs checks every printer rule against them).
    #[serde(default)]
    pub usb: Vec<String>,
}

impl Profile {
    /// The code page documents are encoded in (the first of [`Profile::code_pages`]).
    pub fn code_page(&self) -> Option<CodePage> {
        self.code_pages.first().copied()
    }

    /// Checks the facts the encoder relies on.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_PAPER_DOTS..=MAX_PAPER_DOTS).contains(&self.paper_dots) {
            return Err(format!(
                "paper_dots {} outside {MIN_PAPER_DOTS}..={MAX_PAPER_DOTS} (576 for 80 mm paper, 384 for 58 mm)",
                self.paper_dots
            ));
        }
        if self.code_pages.is_empty() {
            return Err(
                "code_pages is empty (give at least { encoding = \"cp437\", select = 0 })"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// The built-in profiles by id, parsed once from the embedded `profiles.toml`.
pub fn builtin() -> Result<&'static BTreeMap<String, Profile>, String> {
    static PARSED: OnceLock<Result<BTreeMap<String, Profile>, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            let profiles: BTreeMap<String, Profile> = toml::from_str(PROFILES_TOML)
                .map_err(|e| format!("the built-in profiles.toml is invalid: {e}"))?;
            for (id, profile) in &profiles {
                profile
                    .validate()
                    .map_err(|e| format!("built-in profile '{id}': {e}"))?;
            }
            Ok(profiles)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The ids of the built-in profiles, sorted.
pub fn ids() -> Vec<&'static str> {
    builtin()
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The built-in profile `id`; an unknown id is an error listing the known ones.
pub fn lookup(id: &str) -> Result<Profile, String> {
    builtin()?.get(id).cloned().ok_or_else(|| {
        format!(
            "unknown printer profile '{id}'; known profiles: {}",
            ids().join(", ")
        )
    })
}

/// Option names [`resolve`] reads.
pub const PROFILE_OPTIONS: [&str; 7] = [
    "profile",
    "custom_profile",
    "paper_dots",
    "native_qr",
    "cutter",
    "status",
    "code_page",
];

/// The profile a device's options describe: `custom_profile` (a whole table) or the built-in
/// `profile` (default [`DEFAULT_PROFILE`]), then the single-field overrides `paper_dots`,
/// `native_qr`, `cutter`, `status`, then `code_page` (which of the profile's code pages to use,
/// by encoding name). Errors name the option.
pub fn resolve(options: &serde_json::Map<String, serde_json::Value>) -> Result<Profile, String> {
    let mut profile = match (options.get("custom_profile"), options.get("profile")) {
        (Some(_), Some(_)) => {
            return Err("give either option 'profile' or 'custom_profile', not both".to_string());
        }
        (Some(custom), None) => serde_json::from_value::<Profile>(custom.clone())
            .map_err(|e| format!("option 'custom_profile' is invalid: {e}"))?,
        (None, Some(id)) => {
            let id = id
                .as_str()
                .ok_or_else(|| format!("option 'profile' must be a string, not {id}"))?;
            lookup(id).map_err(|e| format!("option 'profile': {e}"))?
        }
        (None, None) => lookup(DEFAULT_PROFILE)?,
    };
    if let Some(value) = options.get("paper_dots") {
        profile.paper_dots = value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| format!("option 'paper_dots' must be a number of dots, not {value}"))?;
    }
    if let Some(value) = options.get("native_qr") {
        profile.native_qr = value
            .as_bool()
            .ok_or_else(|| format!("option 'native_qr' must be true or false, not {value}"))?;
    }
    if let Some(value) = options.get("status") {
        profile.status = value
            .as_bool()
            .ok_or_else(|| format!("option 'status' must be true or false, not {value}"))?;
    }
    if let Some(value) = options.get("cutter") {
        profile.cutter = serde_json::from_value(value.clone()).map_err(|_| {
            format!("option 'cutter' must be \"full\", \"partial\" or \"none\", not {value}")
        })?;
    }
    if let Some(value) = options.get("code_page") {
        let wanted = value.as_str().unwrap_or_default();
        let index = profile
            .code_pages
            .iter()
            .position(|c| c.encoding.as_str() == wanted)
            .ok_or_else(|| {
                let known: Vec<&str> = profile
                    .code_pages
                    .iter()
                    .map(|c| c.encoding.as_str())
                    .collect();
                format!(
                    "option 'code_page' is {value}, but profile '{}' has {} (add the table to a custom_profile)",
                    profile.name,
                    known.join(", ")
                )
            })?;
        let chosen = profile.code_pages.remove(index);
        profile.code_pages.insert(0, chosen);
    }
    profile.validate().map_err(|e| {
        if options.contains_key("custom_profile") {
            format!("option 'custom_profile': {e}")
        } else {
            e
        }
    })?;
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn the_builtin_profiles_parse_and_hold_the_documented_facts() {
        let all = builtin().expect("profiles.toml parses");
        for id in [
            "epson-tm-t20",
            "epson-tm-t88",
            "epson-tm-t20-58mm",
            "generic-80mm",
            "generic-58mm",
        ] {
            assert!(all.contains_key(id), "{id}");
        }
        let t20 = lookup("epson-tm-t20").expect("tm-t20");
        assert_eq!(t20.paper_dots, 576);
        assert!(t20.native_qr && t20.status);
        assert_eq!(t20.cutter, Cutter::Partial);
        assert_eq!(
            t20.code_pages,
            vec![
                CodePage {
                    encoding: Encoding::Cp858,
                    select: 19
                },
                CodePage {
                    encoding: Encoding::Cp437,
                    select: 0
                }
            ]
        );
        let t88 = lookup("epson-tm-t88").expect("tm-t88");
        assert_eq!(
            (t88.paper_dots, t88.native_qr, t88.cutter, t88.status),
            (512, true, Cutter::Partial, true)
        );
        // 42 columns of font A, as Epson specifies for the TM-T88.
        assert_eq!(t88.paper_dots / 12, 42);
        assert_eq!(lookup("epson-tm-t20-58mm").expect("58").paper_dots, 384);
        let g80 = lookup("generic-80mm").expect("g80");
        assert_eq!(
            (g80.paper_dots, g80.native_qr, g80.cutter, g80.status),
            (576, false, Cutter::Full, true)
        );
        let g58 = lookup("generic-58mm").expect("g58");
        assert_eq!(
            (g58.paper_dots, g58.native_qr, g58.cutter, g58.status),
            (384, false, Cutter::None, false)
        );
    }

    #[test]
    fn every_encoding_holds_the_german_letters() {
        for encoding in [Encoding::Cp437, Encoding::Cp850, Encoding::Cp858] {
            for c in "äöüÄÖÜß".chars() {
                assert!(encoding.encode_char(c).is_some(), "{c} in {encoding:?}");
            }
        }
        assert_eq!(Encoding::Cp858.encode_char('€'), Some(0xD5));
        assert_eq!(Encoding::Cp437.encode_char('€'), None);
    }

    #[test]
    fn options_pick_and_override_profiles() {
        assert_eq!(
            resolve(&options(json!({}))).expect("default").name,
            lookup(DEFAULT_PROFILE).expect("default").name
        );
        let p = resolve(&options(json!({"profile": "generic-80mm", "native_qr": true, "paper_dots": 512, "cutter": "none", "status": false}))).expect("overrides");
        assert_eq!(
            (p.native_qr, p.paper_dots, p.cutter, p.status),
            (true, 512, Cutter::None, false)
        );
        let p = resolve(&options(json!({"code_page": "cp437"}))).expect("code page");
        assert_eq!(p.code_page().map(|c| c.select), Some(0));

        let err = resolve(&options(json!({"profile": "tm-9000"}))).expect_err("unknown");
        assert!(
            err.contains("unknown printer profile 'tm-9000'")
                && err.contains(
                    "epson-tm-t20, epson-tm-t20-58mm, epson-tm-t88, generic-58mm, generic-80mm"
                ),
            "{err}"
        );
        for (bad, expected) in [
            (json!({"cutter": "saw"}), "option 'cutter'"),
            (json!({"paper_dots": "wide"}), "option 'paper_dots'"),
            (json!({"paper_dots": 5}), "paper_dots 5 outside"),
            (json!({"native_qr": 1}), "option 'native_qr'"),
            (json!({"code_page": "cp1252"}), "option 'code_page'"),
            (json!({"profile": 7}), "option 'profile'"),
            (
                json!({"profile": "generic-80mm", "custom_profile": {}}),
                "not both",
            ),
            (
                json!({"custom_profile": {"name": "x"}}),
                "option 'custom_profile'",
            ),
        ] {
            let err = resolve(&options(bad.clone())).expect_err("refused");
            assert!(err.contains(expected), "{bad}: {err}");
        }
        let custom = resolve(&options(json!({"custom_profile": {
            "name": "Kiosk printer", "paper_dots": 384, "native_qr": false, "cutter": "full",
            "status": true, "code_pages": [{"encoding": "cp850", "select": 2}]}})))
        .expect("custom");
        assert_eq!(
            custom.code_page().map(|c| c.encoding),
            Some(Encoding::Cp850)
        );
    }
}
