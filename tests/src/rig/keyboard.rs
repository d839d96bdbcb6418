//! What a keyboard scanner sends over USB: HID boot-keyboard reports (a modifier byte, a
//! reserved byte and six key usages, HID Usage Tables §10) for text, as a scanner set to the
//! US or the German layout types it. Written from the HID usage tables and the German
//! layout (DIN 2137), not from the driver's decoder, which works on the kernel's evdev codes.

/// Left Shift in the modifier byte.
const SHIFT: u8 = 0x02;
/// Right Alt (AltGr on a German keyboard) in the modifier byte.
const ALTGR: u8 = 0x40;

/// A layout a scanner can be set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// US English.
    Us,
    /// German (QWERTZ).
    De,
}

/// The key Enter (keyboard) and Enter (keypad).
pub const ENTER: u8 = 0x28;
/// Keypad Enter.
pub const KEYPAD_ENTER: u8 = 0x58;

/// The (modifiers, usage) that types `c`, or None.
pub fn key_for(c: char, layout: Layout) -> Option<(u8, u8)> {
    if c.is_ascii_lowercase() {
        let usage = letter_usage(c, layout);
        return Some((0, usage));
    }
    if c.is_ascii_uppercase() {
        let usage = letter_usage(c.to_ascii_lowercase(), layout);
        return Some((SHIFT, usage));
    }
    if let Some(digit) = c.to_digit(10) {
        // 1..9 are 0x1e..0x26, 0 is 0x27: the same keys in both layouts.
        let usage = if digit == 0 { 0x27 } else { 0x1d + digit as u8 };
        return Some((0, usage));
    }
    let table: &[(char, u8, u8)] = match layout {
        Layout::Us => &[
            (' ', 0, 0x2c),
            ('-', 0, 0x2d),
            ('_', SHIFT, 0x2d),
            ('=', 0, 0x2e),
            ('+', SHIFT, 0x2e),
            (';', 0, 0x33),
            (':', SHIFT, 0x33),
            (',', 0, 0x36),
            ('.', 0, 0x37),
            ('/', 0, 0x38),
            ('?', SHIFT, 0x38),
            ('&', SHIFT, 0x24),
            ('#', SHIFT, 0x20),
            ('%', SHIFT, 0x22),
            ('@', SHIFT, 0x1f),
            ('!', SHIFT, 0x1e),
        ],
        Layout::De => &[
            (' ', 0, 0x2c),
            // The key right of 0: ß ? \.
            ('?', SHIFT, 0x2d),
            ('\\', ALTGR, 0x2d),
            // Right of Ü: + * ~.
            ('+', 0, 0x30),
            ('*', SHIFT, 0x30),
            ('~', ALTGR, 0x30),
            // Left of Enter on ISO keyboards ("Non-US #"): # '.
            ('#', 0, 0x32),
            (',', 0, 0x36),
            (';', SHIFT, 0x36),
            ('.', 0, 0x37),
            (':', SHIFT, 0x37),
            // Where US has /: - _.
            ('-', 0, 0x38),
            ('_', SHIFT, 0x38),
            // Shifted digits.
            ('!', SHIFT, 0x1e),
            ('%', SHIFT, 0x22),
            ('&', SHIFT, 0x23),
            ('/', SHIFT, 0x24),
            ('=', SHIFT, 0x27),
            ('@', ALTGR, 0x14),
        ],
    };
    table
        .iter()
        .find(|(ch, _, _)| *ch == c)
        .map(|&(_, modifiers, usage)| (modifiers, usage))
}

/// a..z are usages 0x04..0x1d; on a German keyboard y and z trade places.
fn letter_usage(c: char, layout: Layout) -> u8 {
    let c = match (layout, c) {
        (Layout::De, 'y') => 'z',
        (Layout::De, 'z') => 'y',
        (_, c) => c,
    };
    0x04 + (c as u8 - b'a')
}

/// The reports for typing `text` and then `terminator` (a usage such as [`ENTER`]): each key
/// pressed in one report and released in the next, as scanners do.
pub fn reports(text: &str, layout: Layout, terminator: Option<u8>) -> Result<Vec<[u8; 8]>, String> {
    let mut reports = Vec::new();
    for c in text.chars() {
        let (modifiers, usage) =
            key_for(c, layout).ok_or_else(|| format!("no key types {c:?} in {layout:?}"))?;
        reports.push([modifiers, 0, usage, 0, 0, 0, 0, 0]);
        reports.push([0; 8]);
    }
    if let Some(usage) = terminator {
        reports.push([0, 0, usage, 0, 0, 0, 0, 0]);
        reports.push([0; 8]);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_scanners_swap_y_and_z_and_move_punctuation() {
        assert_eq!(key_for('z', Layout::Us), Some((0, 0x1d)));
        assert_eq!(key_for('z', Layout::De), Some((0, 0x1c)));
        assert_eq!(key_for('Y', Layout::De), Some((SHIFT, 0x1d)));
        assert_eq!(key_for('/', Layout::De), Some((SHIFT, 0x24)));
        assert_eq!(key_for('/', Layout::Us), Some((0, 0x38)));
        assert_eq!(key_for('7', Layout::De), Some((0, 0x24)));
        assert_eq!(key_for('0', Layout::Us), Some((0, 0x27)));
        assert_eq!(key_for('ä', Layout::De), None);
    }

    #[test]
    fn every_key_is_released() {
        let typed = reports("Az", Layout::De, Some(ENTER)).unwrap_or_default();
        assert_eq!(typed.len(), 6);
        assert_eq!(typed[0], [SHIFT, 0, 0x04, 0, 0, 0, 0, 0]);
        assert!(typed.iter().skip(1).step_by(2).all(|r| *r == [0; 8]));
    }
}
