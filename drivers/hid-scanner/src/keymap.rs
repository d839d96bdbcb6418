//! Key positions → characters, for the layout a scanner types in.
//!
//! A USB keyboard scanner sends key *positions* (Linux key codes), chosen for the layout it is
//! set to (most ship set to US). The same code read with the wrong layout swaps `y`/`z` and
//! moves punctuation, so the driver is told which layout the scanner uses. Covered: letters,
//! digits, space, the punctuation of URLs and booking ids, and the keypad (as with NumLock on).
//! Dead keys (`´`, `^` on German keyboards) produce nothing.

/// Linux key codes the decoder needs by name (`linux/input-event-codes.h`).
pub mod codes {
    /// Tab.
    pub const TAB: u16 = 15;
    /// Enter.
    pub const ENTER: u16 = 28;
    /// Left Ctrl.
    pub const LEFT_CTRL: u16 = 29;
    /// Left Shift.
    pub const LEFT_SHIFT: u16 = 42;
    /// Right Shift.
    pub const RIGHT_SHIFT: u16 = 54;
    /// Left Alt.
    pub const LEFT_ALT: u16 = 56;
    /// Caps Lock.
    pub const CAPS_LOCK: u16 = 58;
    /// Num Lock.
    pub const NUM_LOCK: u16 = 69;
    /// Keypad Enter.
    pub const KP_ENTER: u16 = 96;
    /// Right Ctrl.
    pub const RIGHT_CTRL: u16 = 97;
    /// Right Alt (AltGr on German keyboards).
    pub const RIGHT_ALT: u16 = 100;
}

/// The layout a scanner types in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// US English (most scanners' default).
    Us,
    /// German (QWERTZ).
    De,
}

impl Layout {
    /// Parses the `layout` option.
    pub fn parse(text: &str) -> Result<Layout, String> {
        match text {
            "us" => Ok(Layout::Us),
            "de" => Ok(Layout::De),
            other => Err(format!(
                "option 'layout' must be \"us\" or \"de\", not \"{other}\""
            )),
        }
    }

    /// The character of key `code` with the modifiers, or None (not a character key here).
    pub fn char_for(self, code: u16, shift: bool, altgr: bool) -> Option<char> {
        if let Some(c) = keypad(code, self) {
            return Some(c);
        }
        let (plain, shifted, alt) = match self {
            Layout::Us => us(code)?,
            Layout::De => de(code)?,
        };
        let c = match (altgr, shift) {
            (true, _) => alt,
            (false, true) => shifted,
            (false, false) => plain,
        };
        (c != '\0').then_some(c)
    }
}

/// Keypad keys (NumLock on), the same in both layouts but the decimal key.
fn keypad(code: u16, layout: Layout) -> Option<char> {
    Some(match code {
        71 => '7',
        72 => '8',
        73 => '9',
        74 => '-',
        75 => '4',
        76 => '5',
        77 => '6',
        78 => '+',
        79 => '1',
        80 => '2',
        81 => '3',
        82 => '0',
        83 => match layout {
            Layout::Us => '.',
            Layout::De => ',',
        },
        55 => '*',
        98 => '/',
        _ => return None,
    })
}

/// Letters by key code (the same positions in both layouts but Y and Z).
fn letter(code: u16) -> Option<char> {
    Some(match code {
        16 => 'q',
        17 => 'w',
        18 => 'e',
        19 => 'r',
        20 => 't',
        21 => 'y',
        22 => 'u',
        23 => 'i',
        24 => 'o',
        25 => 'p',
        30 => 'a',
        31 => 's',
        32 => 'd',
        33 => 'f',
        34 => 'g',
        35 => 'h',
        36 => 'j',
        37 => 'k',
        38 => 'l',
        44 => 'z',
        45 => 'x',
        46 => 'c',
        47 => 'v',
        48 => 'b',
        49 => 'n',
        50 => 'm',
        _ => return None,
    })
}

/// (plain, with Shift, with AltGr); '\0' = nothing.
type Key = (char, char, char);

fn us(code: u16) -> Option<Key> {
    if let Some(l) = letter(code) {
        return Some((l, l.to_ascii_uppercase(), '\0'));
    }
    Some(match code {
        2 => ('1', '!', '\0'),
        3 => ('2', '@', '\0'),
        4 => ('3', '#', '\0'),
        5 => ('4', '$', '\0'),
        6 => ('5', '%', '\0'),
        7 => ('6', '^', '\0'),
        8 => ('7', '&', '\0'),
        9 => ('8', '*', '\0'),
        10 => ('9', '(', '\0'),
        11 => ('0', ')', '\0'),
        12 => ('-', '_', '\0'),
        13 => ('=', '+', '\0'),
        26 => ('[', '{', '\0'),
        27 => (']', '}', '\0'),
        39 => (';', ':', '\0'),
        40 => ('\'', '"', '\0'),
        41 => ('`', '~', '\0'),
        43 => ('\\', '|', '\0'),
        51 => (',', '<', '\0'),
        52 => ('.', '>', '\0'),
        53 => ('/', '?', '\0'),
        57 => (' ', ' ', '\0'),
        86 => ('\\', '|', '\0'),
        _ => return None,
    })
}

fn de(code: u16) -> Option<Key> {
    if let Some(l) = letter(code) {
        // QWERTZ: the keys of US Y and Z swapped.
        let l = match l {
            'y' => 'z',
            'z' => 'y',
            other => other,
        };
        let alt = match l {
            'q' => '@',
            'e' => '€',
            'm' => 'µ',
            _ => '\0',
        };
        return Some((l, l.to_ascii_uppercase(), alt));
    }
    Some(match code {
        2 => ('1', '!', '\0'),
        3 => ('2', '"', '²'),
        4 => ('3', '§', '³'),
        5 => ('4', '$', '\0'),
        6 => ('5', '%', '\0'),
        7 => ('6', '&', '\0'),
        8 => ('7', '/', '{'),
        9 => ('8', '(', '['),
        10 => ('9', ')', ']'),
        11 => ('0', '=', '}'),
        12 => ('ß', '?', '\\'),
        13 => ('\0', '\0', '\0'), // ´ and ` are dead keys
        26 => ('ü', 'Ü', '\0'),
        27 => ('+', '*', '~'),
        39 => ('ö', 'Ö', '\0'),
        40 => ('ä', 'Ä', '\0'),
        41 => ('\0', '°', '\0'), // ^ is a dead key
        43 => ('#', '\'', '\0'),
        51 => (',', ';', '\0'),
        52 => ('.', ':', '\0'),
        53 => ('-', '_', '\0'),
        57 => (' ', ' ', '\0'),
        86 => ('<', '>', '|'),
        _ => return None,
    })
}
