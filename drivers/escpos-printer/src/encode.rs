//! A [`Document`] as ESC/POS bytes: pure, no I/O.
//!
//! Bytes matter: at 9600 baud every byte costs about a millisecond, so the encoder sends a
//! **state diff**: a style command only when the style changes. The stream is
//!
//! 1. `ESC @` (`1B 40`, initialise) and `ESC t n` (`1B 74 n`, the profile's first code page);
//! 2. per block:
//!    - **Text**: alignment `ESC a n` (`1B 61 n`, 0 left, 1 centre, 2 right), size `GS ! n`
//!      (`1D 21 n`, `n = ((width-1) << 4) | (height-1)`) and bold `ESC E n` (`1B 45 1/0`), each
//!      only when it differs from the current state; then the text in the code page, wrapped
//!      with [`document::wrap`] at [`document::columns`] for the [`document::fitted_width`]
//!      (exactly as the daemon's PNG preview), each line ended by LF (`0A`);
//!    - **Feed**: `lines` LFs or `ESC d n` (`1B 64 n`), whichever is shorter (`ESC d` feeds
//!      whole lines of the standard spacing whatever the character size);
//!    - **QR**, centred (`ESC a 1`): natively with `GS ( k` (cn 49: model 2, module size,
//!      error correction M, store, print), or as a raster image `GS v 0` (see [`QrMode`]);
//! 3. the cut: `GS V 66 0` (feed until the last line is past the cutter, partial cut) or
//!    `GS V 65 0` (full cut) in one command, or `ESC d 4` without a cutter. The style is not
//!    reset: every job starts with `ESC @`, which restores all defaults.
//!
//! Characters the code page lacks are transliterated: `€` → `EUR`, typographic quotes and
//! dashes → ASCII, `…` → `...`, non-breaking spaces → space; anything else → `?`.
//!
//! Over 600 lines only with its unit tests (the code is about 370).

use leitsystem_plugin::document::{self, Align, Block, Document};
use qrcode::{Color, EcLevel, QrCode};

use crate::profiles::{Cutter, Encoding, Profile};

/// `ESC @`: initialise the printer.
pub const INIT: [u8; 2] = [0x1B, 0x40];
/// Line feed: print the line buffer and advance one line.
pub const LF: u8 = 0x0A;
/// `GS ( k` QR function 65: select model 2.
pub const QR_MODEL_2: [u8; 9] = [0x1D, 0x28, 0x6B, 0x04, 0x00, 0x31, 0x41, 0x32, 0x00];
/// `GS ( k` QR function 69: error correction level M.
pub const QR_EC_M: [u8; 8] = [0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x45, 0x31];
/// `GS ( k` QR function 81: print the stored symbol.
pub const QR_PRINT: [u8; 8] = [0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x51, 0x30];
/// Dots fed past the cutting position before the cut (`GS V m n`'s `n`).
pub const CUT_FEED_DOTS: u8 = 0;
/// Lines fed at the end of a job on a printer without cutter (to reach the tear bar).
pub const TEAR_FEED_LINES: u8 = 4;

/// How QR codes are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrMode {
    /// The printer draws the symbol (`GS ( k`); needs a profile with `native_qr`.
    Native,
    /// The driver draws the symbol and sends it as a raster image (`GS v 0`).
    Raster,
}

impl QrMode {
    /// Native when the profile supports it, else raster.
    pub fn for_profile(profile: &Profile) -> QrMode {
        if profile.native_qr {
            QrMode::Native
        } else {
            QrMode::Raster
        }
    }
}

/// Why a document could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The document breaks its own limits ([`Document::validate`]).
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    /// Native QR codes were asked for but the profile has none.
    #[error("the printer profile '{0}' cannot print QR codes natively (native_qr = false)")]
    NoNativeQr(String),
    /// The QR payload does not fit a QR code.
    #[error("the QR code cannot be made: {0}")]
    Qr(String),
    /// The profile lists no code page.
    #[error("the printer profile '{0}' has no code page")]
    NoCodePage(String),
}

/// [`encode`] with QR codes native when the profile supports them, else raster.
pub fn encode_for(document: &Document, profile: &Profile) -> Result<Vec<u8>, EncodeError> {
    encode(document, profile, QrMode::for_profile(profile))
}

/// The ESC/POS bytes printing `document` on a `profile` printer, ending with the cut.
pub fn encode(document: &Document, profile: &Profile, qr: QrMode) -> Result<Vec<u8>, EncodeError> {
    document.validate().map_err(EncodeError::InvalidDocument)?;
    if qr == QrMode::Native && !profile.native_qr {
        return Err(EncodeError::NoNativeQr(profile.name.clone()));
    }
    let code_page = profile
        .code_page()
        .ok_or_else(|| EncodeError::NoCodePage(profile.name.clone()))?;
    let mut encoder = Encoder {
        out: Vec::with_capacity(512),
        style: Style::DEFAULT,
        encoding: code_page.encoding,
        paper_dots: profile.paper_dots,
    };
    encoder.out.extend_from_slice(&INIT);
    encoder
        .out
        .extend_from_slice(&[0x1B, 0x74, code_page.select]);
    for block in &document.blocks {
        match block {
            Block::Text {
                text,
                align,
                width,
                height,
                bold,
            } => encoder.text(text, *align, *width, *height, *bold),
            Block::Feed { lines } => encoder.feed(*lines),
            Block::Qr { data } => match qr {
                QrMode::Native => encoder.native_qr(data)?,
                QrMode::Raster => encoder.raster_qr(data)?,
            },
        }
    }
    // No reset of the style before the cut: every job starts with `ESC @`.
    match profile.cutter {
        Cutter::Partial => encoder
            .out
            .extend_from_slice(&[0x1D, 0x56, 66, CUT_FEED_DOTS]),
        Cutter::Full => encoder
            .out
            .extend_from_slice(&[0x1D, 0x56, 65, CUT_FEED_DOTS]),
        Cutter::None => encoder
            .out
            .extend_from_slice(&[0x1B, 0x64, TEAR_FEED_LINES]),
    }
    Ok(encoder.out)
}

/// The printer's character style as the encoder last set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    /// `ESC a n`.
    align: u8,
    /// `GS ! n`.
    size: u8,
    /// `ESC E n`.
    bold: bool,
}

impl Style {
    /// The state after `ESC @`.
    const DEFAULT: Style = Style {
        align: 0,
        size: 0,
        bold: false,
    };
}

struct Encoder {
    out: Vec<u8>,
    style: Style,
    encoding: Encoding,
    paper_dots: u32,
}

impl Encoder {
    /// Sends only the commands that change the style.
    fn set_style(&mut self, style: Style) {
        if style.align != self.style.align {
            self.out.extend_from_slice(&[0x1B, 0x61, style.align]);
        }
        if style.size != self.style.size {
            self.out.extend_from_slice(&[0x1D, 0x21, style.size]);
        }
        if style.bold != self.style.bold {
            self.out
                .extend_from_slice(&[0x1B, 0x45, u8::from(style.bold)]);
        }
        self.style = style;
    }

    fn set_align(&mut self, align: u8) {
        self.set_style(Style {
            align,
            ..self.style
        });
    }

    fn text(&mut self, text: &str, align: Align, width: u8, height: u8, bold: bool) {
        let width = document::fitted_width(text, self.paper_dots, width);
        let height = height.clamp(1, document::MAX_SCALE);
        self.set_style(Style {
            align: align_code(align),
            size: ((width - 1) << 4) | (height - 1),
            bold,
        });
        let columns = document::columns(self.paper_dots, width);
        for line in document::wrap(text, columns) {
            let printed = transliterate(&line, self.encoding);
            // Only a transliteration that grew the line ("€" → "EUR") can make it too long
            // for the paper; it is then wrapped again rather than left to the printer.
            let lines = if printed.chars().count() > columns {
                document::wrap(&printed, columns)
            } else {
                vec![printed]
            };
            for line in lines {
                self.out.extend(
                    line.chars()
                        .map(|c| self.encoding.encode_char(c).unwrap_or(b'?')),
                );
                self.out.push(LF);
            }
        }
    }

    fn feed(&mut self, lines: u8) {
        if self.style.size == 0 && lines <= 3 {
            self.out.extend(std::iter::repeat_n(LF, usize::from(lines)));
        } else {
            self.out.extend_from_slice(&[0x1B, 0x64, lines]);
        }
    }

    fn native_qr(&mut self, data: &str) -> Result<(), EncodeError> {
        let modules = qr_code(data)?.width() as u32;
        let module_dots = document::qr_module_dots(modules, self.paper_dots);
        let stored = data.len() + 3;
        let [p_l, p_h] = u16::try_from(stored)
            .map_err(|_| EncodeError::Qr(format!("{} bytes are too many", data.len())))?
            .to_le_bytes();
        self.set_align(1);
        self.out.extend_from_slice(&QR_MODEL_2);
        self.out
            .extend_from_slice(&[0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x43, module_dots as u8]);
        self.out.extend_from_slice(&QR_EC_M);
        self.out
            .extend_from_slice(&[0x1D, 0x28, 0x6B, p_l, p_h, 0x31, 0x50, 0x30]);
        self.out.extend_from_slice(data.as_bytes());
        self.out.extend_from_slice(&QR_PRINT);
        Ok(())
    }

    fn raster_qr(&mut self, data: &str) -> Result<(), EncodeError> {
        let code = qr_code(data)?;
        self.set_align(1);
        self.out
            .extend_from_slice(&raster_image(&code, self.paper_dots));
        self.out.push(LF);
        Ok(())
    }
}

fn align_code(align: Align) -> u8 {
    match align {
        Align::Left => 0,
        Align::Center => 1,
        Align::Right => 2,
    }
}

fn qr_code(data: &str) -> Result<QrCode, EncodeError> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .map_err(|e| EncodeError::Qr(e.to_string()))
}

/// `GS v 0` printing `code` with modules of [`document::qr_module_dots`], no quiet zone (the
/// white paper is one). An even module size is sent at half size with `m = 3` (the printer
/// doubles width and height): a quarter of the bytes. Rows are padded to whole bytes, the
/// padding split between left and right so the symbol stays centred; MSB = leftmost, 1 = black.
fn raster_image(code: &QrCode, paper_dots: u32) -> Vec<u8> {
    let modules = code.width();
    let module_dots = document::qr_module_dots(modules as u32, paper_dots) as usize;
    let (mode, pixels_per_module) = if module_dots % 2 == 0 {
        (3u8, module_dots / 2)
    } else {
        (0u8, module_dots)
    };
    let side = modules * pixels_per_module;
    let row_bytes = side.div_ceil(8);
    let pad_left = (row_bytes * 8 - side) / 2;
    let colors = code.to_colors();
    let mut out = Vec::with_capacity(8 + row_bytes * side);
    let [x_l, x_h] = (row_bytes as u16).to_le_bytes();
    let [y_l, y_h] = (side as u16).to_le_bytes();
    out.extend_from_slice(&[0x1D, 0x76, 0x30, mode, x_l, x_h, y_l, y_h]);
    for y in 0..side {
        let module_row = y / pixels_per_module;
        let mut row = vec![0u8; row_bytes];
        for x in 0..side {
            let module_column = x / pixels_per_module;
            if colors[module_row * modules + module_column] == Color::Dark {
                let bit = pad_left + x;
                row[bit / 8] |= 0x80 >> (bit % 8);
            }
        }
        out.extend_from_slice(&row);
    }
    out
}

/// `text` with every character the code page lacks replaced: `€` → `EUR`, typographic quotes,
/// primes and dashes → their ASCII forms, `…` → `...`, non-breaking and thin spaces → space,
/// `•` → `*`; anything else → `?`.
pub fn transliterate(text: &str, encoding: Encoding) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if encoding.encode_char(c).is_some() {
            out.push(c);
            continue;
        }
        match c {
            '€' => out.push_str("EUR"),
            '‘' | '’' | '‚' | '‛' | '′' | '´' | '`' => out.push('\''),
            '“' | '”' | '„' | '‟' | '″' => out.push('"'),
            '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' => out.push('-'),
            '…' => out.push_str("..."),
            '\u{a0}' | '\u{2007}' | '\u{2009}' | '\u{202f}' => out.push(' '),
            '•' | '·' => out.push('*'),
            '«' => out.push_str("<<"),
            '»' => out.push_str(">>"),
            _ => out.push('?'),
        }
    }
    out
}

/// A representative ticket, as the daemon lays out the demo config's sample ticket: town and
/// office, the call number 4x4, service, appointment, what to do, where to wait, four documents
/// to bring, a 55-character status URL as QR code with a blank line above and below, the date.
/// About 300 characters of text. For tests and benchmarks.
pub fn sample_document() -> Document {
    let centered = |text: &str, bold: bool| Block::Text {
        text: text.to_string(),
        align: Align::Center,
        width: 1,
        height: 1,
        bold,
    };
    Document {
        number: "F-007".to_string(),
        blocks: vec![
            centered("Stadt Musterstadt\nBürgerbüro im Rathaus", false),
            centered("Ihre Nummer", false),
            Block::Text {
                text: "F-007".to_string(),
                align: Align::Center,
                width: 4,
                height: 4,
                bold: true,
            },
            centered("Führerscheinangelegenheiten", true),
            centered("Termin 09:30", false),
            Block::Feed { lines: 1 },
            Block::text("Bitte achten Sie auf die Anzeige."),
            Block::text("Wartebereich Erdgeschoss, Raum 0.12"),
            Block::text(
                "Bitte mitbringen:\n- Personalausweis oder Reisepass\n- Bisheriger Führerschein\n- Ein biometrisches Passfoto\n- Sehtestbescheinigung",
            ),
            Block::Feed { lines: 1 },
            Block::Qr {
                data: "https://termine.musterstadt.de/status/BK-4711-0815-2342".to_string(),
            },
            Block::Feed { lines: 1 },
            centered("23.11.2026 09:00", false),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{CodePage, lookup};

    fn t20() -> Profile {
        lookup("epson-tm-t20").expect("built-in")
    }

    fn doc(blocks: Vec<Block>) -> Document {
        Document {
            number: "A-1".into(),
            blocks,
        }
    }

    fn styled(text: &str, align: Align, width: u8, height: u8, bold: bool) -> Block {
        Block::Text {
            text: text.into(),
            align,
            width,
            height,
            bold,
        }
    }

    #[test]
    fn a_small_document_has_exactly_these_bytes() {
        let bytes = encode_for(
            &doc(vec![
                styled("Bürgerbüro", Align::Center, 1, 1, true),
                styled("A-7", Align::Center, 2, 3, true),
                Block::Feed { lines: 2 },
                Block::text("Grüße"),
            ]),
            &t20(),
        )
        .expect("encodes");
        let expected: Vec<u8> = [
            &[0x1B, 0x40][..],     // ESC @
            &[0x1B, 0x74, 19],     // ESC t 19 (cp858)
            &[0x1B, 0x61, 1],      // centre
            &[0x1B, 0x45, 1],      // bold
            b"B\x81rgerb\x81ro\n", // ü = 0x81
            &[0x1D, 0x21, 0x12],   // width 2, height 3
            b"A-7\n",              // (align and bold unchanged: not sent)
            &[0x1B, 0x64, 2],      // feed 2 at a non-default size: ESC d 2
            &[0x1B, 0x61, 0],      // left
            &[0x1D, 0x21, 0x00],   // size 1x1
            &[0x1B, 0x45, 0],      // bold off
            b"Gr\x81\xE1e\n",      // ü ß
            &[0x1D, 0x56, 66, 0],  // GS V 66 0: feed to the cutter, partial cut
        ]
        .concat();
        assert_eq!(bytes, expected, "{bytes:02X?}");
    }

    #[test]
    fn styles_are_sent_only_when_they_change() {
        let blocks = vec![
            styled("one", Align::Center, 2, 2, true),
            styled("two", Align::Center, 2, 2, true),
            styled("three", Align::Center, 2, 2, true),
        ];
        let bytes = encode_for(&doc(blocks), &t20()).expect("encodes");
        let count = |cmd: &[u8]| bytes.windows(cmd.len()).filter(|w| *w == cmd).count();
        assert_eq!(count(&[0x1B, 0x61, 0x01]), 1);
        assert_eq!(count(&[0x1D, 0x21, 0x11]), 1);
        assert_eq!(count(&[0x1B, 0x45, 0x01]), 1);
        // No reset before the cut: the next job starts with ESC @.
        assert!(bytes.ends_with(b"three\n\x1DVB\x00"));
        // Plain text needs no style command at all.
        let plain =
            encode_for(&doc(vec![Block::text("a"), Block::text("b")]), &t20()).expect("encodes");
        assert_eq!(plain, b"\x1B@\x1Bt\x13a\nb\n\x1DVB\x00");
    }

    #[test]
    fn feeds_use_the_shorter_form() {
        let p = t20();
        let body = |lines: u8| {
            let bytes = encode_for(&doc(vec![Block::Feed { lines }]), &p).expect("encodes");
            bytes[5..bytes.len() - 4].to_vec()
        };
        assert_eq!(body(1), b"\n");
        assert_eq!(body(3), b"\n\n\n");
        assert_eq!(body(4), [0x1B, 0x64, 4]);
        assert_eq!(body(8), [0x1B, 0x64, 8]);
    }

    #[test]
    fn umlauts_are_encoded_per_code_page() {
        let text = "äöüÄÖÜß";
        let cp858 = encode_for(&doc(vec![Block::text(text)]), &t20()).expect("encodes");
        assert_eq!(
            &cp858[5..13],
            &[0x84, 0x94, 0x81, 0x8E, 0x99, 0x9A, 0xE1, LF]
        );
        // cp437 and cp850 agree on these letters.
        for (encoding, select) in [(Encoding::Cp437, 0), (Encoding::Cp850, 2)] {
            let mut profile = t20();
            profile.code_pages = vec![CodePage { encoding, select }];
            let bytes = encode_for(&doc(vec![Block::text(text)]), &profile).expect("encodes");
            assert_eq!(&bytes[2..5], &[0x1B, 0x74, select]);
            assert_eq!(
                &bytes[5..13],
                &[0x84, 0x94, 0x81, 0x8E, 0x99, 0x9A, 0xE1, LF],
                "{encoding:?}"
            );
        }
    }

    #[test]
    fn missing_characters_are_transliterated() {
        assert_eq!(transliterate("37 €", Encoding::Cp858), "37 €");
        assert_eq!(transliterate("37 €", Encoding::Cp437), "37 EUR");
        assert_eq!(
            transliterate("„Bürger“ – ‘x’ … 日", Encoding::Cp437),
            "\"Bürger\" - 'x' ... ?"
        );
        let mut profile = t20();
        profile.code_pages = vec![CodePage {
            encoding: Encoding::Cp437,
            select: 0,
        }];
        let bytes = encode_for(&doc(vec![Block::text("5 €")]), &profile).expect("encodes");
        assert_eq!(&bytes[5..], b"5 EUR\n\x1DVB\x00");
        let bytes = encode_for(&doc(vec![Block::text("5 €")]), &t20()).expect("encodes");
        assert_eq!(&bytes[5..], b"5 \xD5\n\x1DVB\x00");
    }

    #[test]
    fn text_wraps_like_the_preview_and_never_overflows() {
        let text = "Bitte halten Sie bereit: bisheriger Ausweis, ein biometrisches Passfoto.";
        let bytes = encode_for(&doc(vec![Block::text(text)]), &t20()).expect("encodes");
        let body = &bytes[5..bytes.len() - 4];
        let lines: Vec<&[u8]> = body.split(|b| *b == LF).filter(|l| !l.is_empty()).collect();
        let expected = document::wrap(text, document::columns(576, 1));
        assert_eq!(lines.len(), expected.len());
        for (line, wanted) in lines.iter().zip(&expected) {
            assert_eq!(*line, wanted.as_bytes());
        }
        // The TM-T88 (512 dots) gets 42 columns: no line of its text is longer.
        let t88 = crate::profiles::lookup("epson-tm-t88").expect("tm-t88");
        let bytes = encode_for(&doc(vec![Block::text(text)]), &t88).expect("encodes");
        let body = &bytes[5..bytes.len() - 4];
        let longest = body.split(|b| *b == LF).map(<[u8]>::len).max();
        assert_eq!(document::columns(512, 1), 42);
        assert!(
            longest.is_some_and(|l| (30..=42).contains(&l)),
            "{longest:?}"
        );
        // A call number too wide for 8x on 58 mm paper is shrunk, not split.
        let mut narrow = t20();
        narrow.paper_dots = 384;
        let bytes = encode_for(
            &doc(vec![styled("AB-12345", Align::Center, 8, 8, true)]),
            &narrow,
        )
        .expect("encodes");
        assert!(bytes.windows(3).any(|w| w == [0x1D, 0x21, 0x37]), "4x8");
        assert!(bytes.windows(9).any(|w| w == b"AB-12345\n"));
        // An expanding transliteration is wrapped again rather than left to the printer.
        let mut cp437 = t20();
        cp437.code_pages = vec![CodePage {
            encoding: Encoding::Cp437,
            select: 0,
        }];
        let text = format!("{}€", "x".repeat(47));
        let bytes = encode_for(&doc(vec![Block::text(&text)]), &cp437).expect("encodes");
        let body = &bytes[5..bytes.len() - 4];
        assert!(body.split(|b| *b == LF).all(|l| l.len() <= 48), "{body:?}");
    }

    #[test]
    fn the_native_qr_code_is_gs_paren_k() {
        let data = "https://example.org/t/A-1";
        let bytes = encode(
            &doc(vec![Block::Qr { data: data.into() }]),
            &t20(),
            QrMode::Native,
        )
        .expect("encodes");
        let store_len = (data.len() + 3) as u8;
        let expected: Vec<u8> = [
            &[0x1B, 0x40, 0x1B, 0x74, 19][..],
            &[0x1B, 0x61, 1],
            &[0x1D, 0x28, 0x6B, 0x04, 0x00, 0x31, 0x41, 0x32, 0x00],
            &[0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x43, 4],
            &[0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x45, 0x31],
            &[0x1D, 0x28, 0x6B, store_len, 0x00, 0x31, 0x50, 0x30],
            data.as_bytes(),
            &[0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x51, 0x30],
            &[0x1D, 0x56, 66, 0],
        ]
        .concat();
        assert_eq!(bytes, expected);
        let generic = lookup("generic-80mm").expect("built-in");
        assert_eq!(
            encode(
                &doc(vec![Block::Qr { data: data.into() }]),
                &generic,
                QrMode::Native
            ),
            Err(EncodeError::NoNativeQr(generic.name.clone()))
        );
    }

    /// The QR symbol drawn by a `GS v 0` command, one bool per printed dot.
    fn printed_raster(bytes: &[u8]) -> (usize, usize, Vec<bool>) {
        let at = bytes
            .windows(3)
            .position(|w| w == [0x1D, 0x76, 0x30])
            .expect("a GS v 0 command");
        let head = &bytes[at + 3..at + 8];
        let scale = match head[0] {
            0 => 1,
            3 => 2,
            m => panic!("unexpected mode {m}"),
        };
        let row_bytes = usize::from(u16::from_le_bytes([head[1], head[2]]));
        let rows = usize::from(u16::from_le_bytes([head[3], head[4]]));
        let data = &bytes[at + 8..at + 8 + row_bytes * rows];
        assert_eq!(bytes[at + 8 + row_bytes * rows], LF, "LF after the image");
        let (w, h) = (row_bytes * 8 * scale, rows * scale);
        let mut dots = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let (px, py) = (x / scale, y / scale);
                dots[y * w + x] = data[py * row_bytes + px / 8] & (0x80 >> (px % 8)) != 0;
            }
        }
        (w, h, dots)
    }

    fn decode_raster(bytes: &[u8]) -> (usize, String) {
        let (w, h, dots) = printed_raster(bytes);
        let border = 40;
        let mut image =
            rqrr::PreparedImage::prepare_from_bitmap(w + 2 * border, h + 2 * border, |x, y| {
                x >= border
                    && y >= border
                    && x < w + border
                    && y < h + border
                    && dots[(y - border) * w + (x - border)]
            });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code");
        let (_, content) = grids[0].decode().expect("the raster decodes");
        (h, content)
    }

    #[test]
    fn the_raster_qr_code_decodes_back() {
        let data = "https://termine.musterstadt.de/s/A-042?d=2026-04-15&t=9";
        for profile in ["generic-80mm", "generic-58mm", "epson-tm-t20"] {
            let profile = lookup(profile).expect("built-in");
            let bytes = encode(
                &doc(vec![Block::Qr { data: data.into() }]),
                &profile,
                QrMode::Raster,
            )
            .expect("encodes");
            let (height, content) = decode_raster(&bytes);
            assert_eq!(content, data);
            let modules = qr_code(data).expect("qr").width();
            assert_eq!(height, modules * 4, "4-dot modules");
            // Quadruple mode: 2x2 pixels per module.
            let at = bytes
                .windows(3)
                .position(|w| w == [0x1D, 0x76, 0x30])
                .expect("GS v 0");
            assert_eq!(bytes[at + 3], 3);
            assert_eq!(&bytes[at - 3..at], &[0x1B, 0x61, 1], "centred");
        }
    }

    #[test]
    fn an_odd_module_size_is_sent_as_is() {
        // 49 modules (version 8) on paper 190 dots wide: 3-dot modules, mode 0.
        let data = "x".repeat(150);
        let mut profile = lookup("generic-58mm").expect("built-in");
        profile.paper_dots = 190;
        let bytes = encode(
            &doc(vec![Block::Qr { data: data.clone() }]),
            &profile,
            QrMode::Raster,
        )
        .expect("encodes");
        let at = bytes
            .windows(3)
            .position(|w| w == [0x1D, 0x76, 0x30])
            .expect("GS v 0");
        assert_eq!(bytes[at + 3], 0);
        let (height, content) = decode_raster(&bytes);
        assert_eq!(content, data);
        assert_eq!(height, qr_code(&data).expect("qr").width() * 3);
    }

    #[test]
    fn every_profile_ends_with_its_cut() {
        let d = doc(vec![Block::text("x")]);
        let end = |id: &str| {
            let bytes = encode_for(&d, &lookup(id).expect("built-in")).expect("encodes");
            bytes[bytes.len() - 4..].to_vec()
        };
        assert_eq!(end("epson-tm-t88"), [0x1D, 0x56, 66, 0]);
        assert_eq!(end("generic-80mm"), [0x1D, 0x56, 65, 0]);
        assert_eq!(end("generic-58mm")[1..], [0x1B, 0x64, 4]);
    }

    #[test]
    fn invalid_documents_are_refused() {
        let err = encode_for(&doc(vec![Block::text("bell\u{7}")]), &t20()).expect_err("refused");
        assert!(matches!(err, EncodeError::InvalidDocument(_)), "{err}");
    }

    #[test]
    fn the_sample_ticket_is_small() {
        let sample = sample_document();
        let native = encode_for(&sample, &t20()).expect("encodes");
        // 444 bytes: 315 of text and line feeds, 3 feeds, 96 for the QR code (41 of commands,
        // 55 of data), 5 to initialise, 4 to cut and 21 for six style changes and centring
        // the QR code; nothing left to drop but the model command (model 2 is the default).
        assert!(native.len() <= 444, "native: {} bytes", native.len());
        let raster = encode(&sample, &t20(), QrMode::Raster).expect("encodes");
        let (_, content) = decode_raster(&raster);
        assert!(content.starts_with("https://"));
        eprintln!(
            "sample ticket: {} bytes native, {} bytes raster",
            native.len(),
            raster.len()
        );
    }
}
