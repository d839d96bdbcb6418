//! The printed ticket as a document independent of any printer.
//!
//! The daemon lays a ticket out as a [`Document`]: blocks of text, blank lines and one QR code,
//! top to bottom, with the paper cut after the last block. A printer driver turns it into its own
//! commands (ESC/POS for `drivers/escpos-printer`); the daemon renders the same document as a
//! PNG preview. Both sides use the geometry and the wrapping defined here, so the preview shows
//! the lines exactly as the paper does.
//!
//! Geometry follows the ESC/POS "font A" that every thermal printer has: a character cell of
//! 12 x 24 dots at 203 dpi, scaled by whole factors (1 to 8) in width and height.

use serde::{Deserialize, Serialize};

/// Width of a character cell of the printer's standard font, in dots.
pub const CELL_WIDTH_DOTS: u32 = 12;
/// Height of a character cell of the printer's standard font, in dots.
pub const CELL_HEIGHT_DOTS: u32 = 24;
/// Largest scale factor of text (ESC/POS `GS !` allows 1 to 8).
pub const MAX_SCALE: u8 = 8;
/// Printable width of 58 mm paper at 203 dpi (48 mm), in dots.
pub const PAPER_58MM_DOTS: u32 = 384;
/// Printable width of 80 mm paper at 203 dpi (72 mm), in dots.
pub const PAPER_80MM_DOTS: u32 = 576;
/// Size of one QR module in dots: 4 dots are 0.5 mm at 203 dpi, the smallest module phone
/// cameras and scanners read reliably from thermal paper.
pub const QR_MODULE_DOTS: u32 = 4;
/// Longest QR payload a document may carry, in bytes (a version 10 code at level M holds 213).
pub const MAX_QR_BYTES: usize = 200;
/// Most blocks a document may have.
pub const MAX_BLOCKS: usize = 64;
/// Longest text of one block, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;

/// A ticket to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The call number the document is the ticket of (for logs, simulators and tests).
    pub number: String,
    /// Blocks, top to bottom. The paper is cut after the last one.
    pub blocks: Vec<Block>,
}

/// Horizontal alignment of a block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    /// Flush left.
    #[default]
    Left,
    /// Centred.
    Center,
    /// Flush right.
    Right,
}

/// One part of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    /// Text, word-wrapped to the paper width; `\n` starts a new line.
    Text {
        /// The text (any Unicode; a driver encodes what its code page holds).
        text: String,
        /// Alignment.
        #[serde(default)]
        align: Align,
        /// Width scale, 1 to 8.
        #[serde(default = "one")]
        width: u8,
        /// Height scale, 1 to 8.
        #[serde(default = "one")]
        height: u8,
        /// Emphasised.
        #[serde(default)]
        bold: bool,
    },
    /// Blank lines of the standard font.
    Feed {
        /// How many (1 to 8).
        lines: u8,
    },
    /// A QR code (error correction level M), centred, modules of [`QR_MODULE_DOTS`].
    Qr {
        /// The payload.
        data: String,
    },
}

fn one() -> u8 {
    1
}

impl Block {
    /// Plain text of default style.
    pub fn text(text: impl Into<String>) -> Self {
        Block::Text {
            text: text.into(),
            align: Align::Left,
            width: 1,
            height: 1,
            bold: false,
        }
    }
}

impl Document {
    /// Checks the limits a driver relies on: scales 1 to 8, non-empty bounded QR payloads,
    /// bounded text, no control characters but `\n`.
    pub fn validate(&self) -> Result<(), String> {
        if self.blocks.len() > MAX_BLOCKS {
            return Err(format!(
                "{} blocks, at most {MAX_BLOCKS} allowed",
                self.blocks.len()
            ));
        }
        for (index, block) in self.blocks.iter().enumerate() {
            let problem = match block {
                Block::Text {
                    text,
                    width,
                    height,
                    ..
                } => {
                    if !(1..=MAX_SCALE).contains(width) || !(1..=MAX_SCALE).contains(height) {
                        Some(format!("scale {width}x{height} outside 1..={MAX_SCALE}"))
                    } else if text.chars().count() > MAX_TEXT_CHARS {
                        Some(format!("text longer than {MAX_TEXT_CHARS} characters"))
                    } else if text.chars().any(|c| c.is_control() && c != '\n') {
                        Some("text holds control characters".to_string())
                    } else {
                        None
                    }
                }
                Block::Feed { lines } => {
                    (!(1..=8).contains(lines)).then(|| format!("feed of {lines} lines"))
                }
                Block::Qr { data } => {
                    if data.is_empty() {
                        Some("empty QR payload".to_string())
                    } else if data.len() > MAX_QR_BYTES {
                        Some(format!(
                            "QR payload of {} bytes, at most {MAX_QR_BYTES}",
                            data.len()
                        ))
                    } else {
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                return Err(format!("block {}: {problem}", index + 1));
            }
        }
        Ok(())
    }
}

/// Characters per line of text at `width_scale` on paper `paper_dots` wide.
pub fn columns(paper_dots: u32, width_scale: u8) -> usize {
    let cell = CELL_WIDTH_DOTS * u32::from(width_scale.max(1));
    (paper_dots / cell).max(1) as usize
}

/// The width scale actually used for `text`: the requested one, reduced until the longest word
/// fits on one line (a call number is never split).
pub fn fitted_width(text: &str, paper_dots: u32, width_scale: u8) -> u8 {
    let longest = text
        .split_whitespace()
        .map(|w| w.chars().count())
        .max()
        .unwrap_or(0);
    let mut scale = width_scale.clamp(1, MAX_SCALE);
    while scale > 1 && columns(paper_dots, scale) < longest {
        scale -= 1;
    }
    scale
}

/// Breaks `text` into lines of at most `columns` characters: at `\n`, else at the last space
/// that fits; a word longer than a line is split. Runs of spaces inside a line are kept.
pub fn wrap(text: &str, columns: usize) -> Vec<String> {
    let columns = columns.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut line_len = 0;
        for word in paragraph.split(' ') {
            let mut word: Vec<char> = word.chars().collect();
            // Words longer than a line are split hard.
            while word.len() > columns {
                if line_len > 0 {
                    lines.push(std::mem::take(&mut line));
                    line_len = 0;
                }
                let rest = word.split_off(columns);
                lines.push(word.into_iter().collect());
                word = rest;
            }
            let needed = if line_len == 0 {
                word.len()
            } else {
                line_len + 1 + word.len()
            };
            if needed > columns && line_len > 0 {
                lines.push(std::mem::take(&mut line));
                line_len = 0;
            }
            if line_len > 0 || !line.is_empty() {
                line.push(' ');
                line_len += 1;
            }
            line.extend(word.iter());
            line_len += word.len();
        }
        lines.push(line);
    }
    lines
}

/// Dots a line of `width_scale` text with `chars` characters occupies.
pub fn text_width_dots(chars: usize, width_scale: u8) -> u32 {
    chars as u32 * CELL_WIDTH_DOTS * u32::from(width_scale.max(1))
}

/// Left offset in dots of a line `line_dots` wide on paper `paper_dots` wide.
pub fn aligned_left(align: Align, line_dots: u32, paper_dots: u32) -> u32 {
    let free = paper_dots.saturating_sub(line_dots);
    match align {
        Align::Left => 0,
        Align::Center => free / 2,
        Align::Right => free,
    }
}

/// Module size in dots for a QR code of `modules` modules per side: [`QR_MODULE_DOTS`], or
/// less when the paper is too narrow (never below 2).
pub fn qr_module_dots(modules: u32, paper_dots: u32) -> u32 {
    let mut size = QR_MODULE_DOTS;
    while size > 2 && modules * size > paper_dots {
        size -= 1;
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_splits_only_overlong_words() {
        let check = |text: &str, columns: usize, expected: &[&str]| {
            assert_eq!(wrap(text, columns), expected, "{text:?} at {columns}");
        };
        check(
            "Bitte achten Sie auf die Anzeige.",
            16,
            &["Bitte achten Sie", "auf die Anzeige."],
        );
        check(
            "Führerscheinangelegenheiten",
            10,
            &["Führersche", "inangelege", "nheiten"],
        );
        check("ab\ncd", 10, &["ab", "cd"]);
        check("", 10, &[""]);
        check("exactly10c", 10, &["exactly10c"]);
        check(
            "a verylongwordhere b",
            6,
            &["a", "verylo", "ngword", "here b"],
        );
    }

    #[test]
    fn a_call_number_is_shrunk_rather_than_split() {
        assert_eq!(columns(PAPER_58MM_DOTS, 1), 32);
        assert_eq!(columns(PAPER_80MM_DOTS, 1), 48);
        assert_eq!(fitted_width("A-042", PAPER_58MM_DOTS, 4), 4);
        assert_eq!(fitted_width("AB-12345", PAPER_58MM_DOTS, 8), 4);
        assert_eq!(fitted_width("x", PAPER_58MM_DOTS, 0), 1);
    }

    #[test]
    fn limits_are_checked() {
        let doc = |block: Block| Document {
            number: "A-1".into(),
            blocks: vec![block],
        };
        assert!(doc(Block::text("Grüße")).validate().is_ok());
        let bad = [
            doc(Block::Text {
                text: "x".into(),
                align: Align::Left,
                width: 9,
                height: 1,
                bold: false,
            }),
            doc(Block::text("bell\u{7}")),
            doc(Block::Qr {
                data: String::new(),
            }),
            doc(Block::Qr {
                data: "x".repeat(MAX_QR_BYTES + 1),
            }),
            doc(Block::Feed { lines: 0 }),
        ];
        for d in bad {
            assert!(d.validate().is_err(), "{d:?}");
        }
    }
}
