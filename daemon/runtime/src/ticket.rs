//! The printed ticket: its layout as a printer-independent [`Document`] and a PNG rendering of
//! the same document.
//!
//! The layout is built from the ticket, the catalog and `[ticket]` of the config: town and
//! office, the call number very large, the service, the appointment time, what to do, where to
//! wait, the documents to bring, a QR code and the date and time. Printer drivers encode the
//! document for their hardware (`drivers/escpos-printer`); [`render_png`] draws it the way a
//! 203 dpi thermal printer prints it, using the same line wrapping
//! ([`leitsystem_plugin::document`]), for the admin preview, `leitsystemd ticket-preview` and
//! the tests.
//!
//! Over 600 lines only with its unit tests (the code is about 530).

use embedded_graphics::mono_font::iso_8859_1::FONT_10X20;
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text as GlyphText};
use leitsystem_plugin::document::{
    self, Align, Block, CELL_HEIGHT_DOTS, CELL_WIDTH_DOTS, Document, PAPER_58MM_DOTS,
    PAPER_80MM_DOTS,
};

use crate::catalog::Catalog;
pub use crate::catalog::{Language, TicketLayout};
use crate::clock::Millis;
use crate::config::{TicketConfig, TicketQr};
use crate::domain::{Ticket, TicketOrigin};

/// The ticket layout from a validated `[ticket]` section.
pub fn layout_from_config(config: &TicketConfig) -> TicketLayout {
    TicketLayout {
        languages: config
            .languages
            .get_ref()
            .iter()
            .map(|l| {
                if l == "en" {
                    Language::En
                } else {
                    Language::De
                }
            })
            .collect(),
        qr: config.qr,
        status_url: config.status_url.as_ref().map(|u| u.get_ref().clone()),
        texts: config.texts.clone(),
    }
}

/// What the QR code of `ticket` holds, if any.
pub fn qr_payload(ticket: &Ticket, catalog: &Catalog) -> Option<String> {
    let layout = &catalog.ticket;
    let booking = match &ticket.origin {
        TicketOrigin::Appointment { booking, .. } => Some(booking),
        TicketOrigin::WalkIn { booking } => booking.as_ref(),
    };
    match layout.qr {
        TicketQr::None => None,
        TicketQr::CallNumber => Some(ticket.number.to_string()),
        TicketQr::StatusUrl => {
            let template = layout.status_url.as_deref()?;
            if template.contains("{booking}") && booking.is_none() {
                return Some(ticket.number.to_string());
            }
            // Values are percent-encoded: a booking id is the website's text and may hold
            // `/`, `?`, spaces or control characters that must not change the URL.
            Some(
                template
                    .replace("{booking}", &url_part(booking.map_or("", |b| b.as_str())))
                    .replace("{ticket}", &url_part(ticket.number.as_str()))
                    .replace("{day}", &ticket.day.to_string())
                    .replace("{site}", &url_part(&catalog.site_id)),
            )
        }
    }
}

/// Characters left as they are in a URL part: RFC 3986's unreserved ones.
const URL_PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` percent-encoded (UTF-8) for one path segment or query value.
fn url_part(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, URL_PART).to_string()
}

fn centered(text: String) -> Block {
    Block::Text {
        text,
        align: Align::Center,
        width: 1,
        height: 1,
        bold: false,
    }
}

/// Lays out the ticket as issued (or as it stands, for a reprint), printed at `now`.
pub fn ticket_document(ticket: &Ticket, catalog: &Catalog, now: Millis) -> Document {
    let layout = &catalog.ticket;
    let service = catalog.services.get(&ticket.service);
    let department = service.and_then(|s| catalog.departments.get(&s.department));
    let mut blocks = vec![
        centered(format!("{}\n{}", catalog.town, catalog.site_name)),
        centered(layout.lines(&layout.texts.heading)),
        Block::Text {
            text: ticket.number.to_string(),
            align: Align::Center,
            width: 4,
            height: 4,
            bold: true,
        },
    ];
    if let Some(service) = service {
        blocks.push(Block::Text {
            text: layout.lines(&service.name),
            align: Align::Center,
            width: 1,
            height: 1,
            bold: true,
        });
    }
    if let TicketOrigin::Appointment { slot_start, .. } = &ticket.origin {
        let time = catalog.calendar.local_hhmm(*slot_start);
        blocks.push(centered(
            layout
                .lines(&layout.texts.appointment)
                .replace("{time}", &time),
        ));
    }
    if let Some(desk) = ticket
        .preferred_desk
        .as_ref()
        .and_then(|d| catalog.desks.get(d))
    {
        blocks.push(centered(layout.lines(&desk.label)));
    }
    blocks.push(Block::Feed { lines: 1 });
    blocks.push(Block::text(layout.lines(&layout.texts.watch_screen)));
    if let Some(department) = department {
        blocks.push(Block::text(layout.lines(&department.waiting_area)));
    }
    let documents = service.map(|s| s.documents.as_slice()).unwrap_or_default();
    if !documents.is_empty() {
        let mut list = layout.lines(&layout.texts.bring);
        for doc in documents {
            for (index, line) in layout.lines(doc).split('\n').enumerate() {
                list.push_str(if index == 0 { "\n- " } else { "\n  " });
                list.push_str(line);
            }
        }
        blocks.push(Block::text(list));
    }
    if let Some(data) = qr_payload(ticket, catalog) {
        // A blank line above and below: the quiet zone a scanner needs around the code.
        blocks.push(Block::Feed { lines: 1 });
        blocks.push(Block::Qr { data });
        blocks.push(Block::Feed { lines: 1 });
    }
    blocks.push(centered(catalog.calendar.local_ddmmyyyy_hhmm(now)));
    Document {
        number: ticket.number.to_string(),
        blocks,
    }
}

/// Paper sizes the PNG preview knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paper {
    /// 58 mm roll, 48 mm printable (384 dots).
    Mm58,
    /// 80 mm roll, 72 mm printable (576 dots).
    Mm80,
}

impl Paper {
    /// Printable width in dots.
    pub fn printable_dots(self) -> u32 {
        match self {
            Paper::Mm58 => PAPER_58MM_DOTS,
            Paper::Mm80 => PAPER_80MM_DOTS,
        }
    }

    /// Whole paper width in dots at 203 dpi.
    pub fn paper_dots(self) -> u32 {
        match self {
            Paper::Mm58 => 463,
            Paper::Mm80 => 639,
        }
    }

    /// From "58" / "58mm" / "80" / "80mm".
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim_end_matches("mm") {
            "58" => Some(Paper::Mm58),
            "80" => Some(Paper::Mm80),
            _ => None,
        }
    }
}

/// Vertical advance of one line of text: the cell height plus the printer's default spacing
/// (ESC/POS default line spacing is 30 dots for the 24-dot font).
fn line_advance(height_scale: u8) -> u32 {
    CELL_HEIGHT_DOTS * u32::from(height_scale) + 6
}

/// A 1-bit canvas; `true` is a black dot.
struct Canvas {
    width: u32,
    height: u32,
    dots: Vec<bool>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            dots: vec![false; (width * height) as usize],
        }
    }

    fn set(&mut self, x: u32, y: u32) {
        if x < self.width && y < self.height {
            self.dots[(y * self.width + x) as usize] = true;
        }
    }

    fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.dots[(y * self.width + x) as usize]
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = BinaryColor;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(point, color) in pixels {
            if color == BinaryColor::On && point.x >= 0 && point.y >= 0 {
                self.set(point.x as u32, point.y as u32);
            }
        }
        Ok(())
    }
}

/// The font standing in for the printer's font A: 10 x 20 glyphs in a 12 x 24 cell,
/// ISO 8859-1 (umlauts and ß).
const FONT: &MonoFont<'static> = &FONT_10X20;

/// How a line of text is drawn.
#[derive(Debug, Clone, Copy)]
struct CellStyle {
    width: u8,
    height: u8,
    bold: bool,
}

/// Draws one character cell in `style` with its top left at (`x`, `y`); `glyph` is scratch
/// space of one unscaled cell.
fn draw_char(
    canvas: &mut Canvas,
    glyph: &mut Canvas,
    c: char,
    (x, y): (u32, u32),
    style: CellStyle,
) {
    let CellStyle {
        width: w,
        height: h,
        bold,
    } = style;
    glyph.dots.iter_mut().for_each(|d| *d = false);
    let mut buf = [0u8; 4];
    let text = c.encode_utf8(&mut buf);
    let style = MonoTextStyle::new(FONT, BinaryColor::On);
    let _ = GlyphText::with_baseline(text, Point::new(1, 2), style, Baseline::Top).draw(glyph);
    if bold {
        let _ = GlyphText::with_baseline(text, Point::new(2, 2), style, Baseline::Top).draw(glyph);
    }
    let (w, h) = (u32::from(w), u32::from(h));
    for gy in 0..CELL_HEIGHT_DOTS {
        for gx in 0..CELL_WIDTH_DOTS {
            if glyph.get(gx, gy) {
                for dy in 0..h {
                    for dx in 0..w {
                        canvas.set(x + gx * w + dx, y + gy * h + dy);
                    }
                }
            }
        }
    }
}

/// Errors of the PNG rendering.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The document breaks a limit.
    #[error("invalid document: {0}")]
    Invalid(String),
    /// The QR payload does not fit a QR code.
    #[error("QR code: {0}")]
    Qr(String),
    /// PNG encoding failed.
    #[error("PNG encoding: {0}")]
    Png(String),
}

/// One laid-out piece: text lines or a QR matrix, with its vertical extent.
enum Placed {
    Line {
        text: String,
        x: u32,
        width: u8,
        height: u8,
        bold: bool,
    },
    Qr {
        modules: Vec<bool>,
        side: u32,
        module: u32,
    },
    Space(u32),
}

fn layout(document: &Document, printable: u32) -> Result<Vec<Placed>, RenderError> {
    let mut placed = Vec::new();
    for block in &document.blocks {
        match block {
            Block::Text {
                text,
                align,
                width,
                height,
                bold,
            } => {
                let width = document::fitted_width(text, printable, *width);
                for line in document::wrap(text, document::columns(printable, width)) {
                    let dots = document::text_width_dots(line.chars().count(), width);
                    placed.push(Placed::Line {
                        x: document::aligned_left(*align, dots, printable),
                        text: line,
                        width,
                        height: *height,
                        bold: *bold,
                    });
                }
            }
            Block::Feed { lines } => {
                placed.push(Placed::Space(u32::from(*lines) * line_advance(1)))
            }
            Block::Qr { data } => {
                let code = qrcode::QrCode::with_error_correction_level(
                    data.as_bytes(),
                    qrcode::EcLevel::M,
                )
                .map_err(|e| RenderError::Qr(e.to_string()))?;
                let side = code.width() as u32;
                let modules = code
                    .to_colors()
                    .into_iter()
                    .map(|c| c == qrcode::Color::Dark)
                    .collect();
                placed.push(Placed::Qr {
                    modules,
                    side,
                    module: document::qr_module_dots(side, printable),
                });
            }
        }
    }
    Ok(placed)
}

/// Renders `document` as a 1-bit PNG the width of `paper` at 203 dpi, as the printer prints
/// it: the same font cell, scaling, wrapping, alignment and QR module size. The margins left
/// and right are the part of the roll the print head does not reach; below the last line is
/// the feed to the cutter.
pub fn render_png(document: &Document, paper: Paper) -> Result<Vec<u8>, RenderError> {
    document.validate().map_err(RenderError::Invalid)?;
    let printable = paper.printable_dots();
    let margin = (paper.paper_dots() - printable) / 2;
    let placed = layout(document, printable)?;
    let top = 24;
    let cut_feed = 4 * line_advance(1);
    let body: u32 = placed
        .iter()
        .map(|p| match p {
            Placed::Line { height, .. } => line_advance(*height),
            Placed::Qr { side, module, .. } => side * module + line_advance(1) - CELL_HEIGHT_DOTS,
            Placed::Space(dots) => *dots,
        })
        .sum();
    let mut canvas = Canvas::new(paper.paper_dots(), top + body + cut_feed);
    let mut glyph = Canvas::new(CELL_WIDTH_DOTS, CELL_HEIGHT_DOTS);
    let mut y = top;
    for piece in &placed {
        match piece {
            Placed::Line {
                text,
                x,
                width,
                height,
                bold,
            } => {
                let cell = CELL_WIDTH_DOTS * u32::from(*width);
                for (i, c) in text.chars().enumerate() {
                    let cx = margin + x + i as u32 * cell;
                    let style = CellStyle {
                        width: *width,
                        height: *height,
                        bold: *bold,
                    };
                    draw_char(&mut canvas, &mut glyph, c, (cx, y), style);
                }
                y += line_advance(*height);
            }
            Placed::Qr {
                modules,
                side,
                module,
            } => {
                let x0 = margin + (printable.saturating_sub(side * module)) / 2;
                for my in 0..*side {
                    for mx in 0..*side {
                        if modules[(my * side + mx) as usize] {
                            for dy in 0..*module {
                                for dx in 0..*module {
                                    canvas.set(x0 + mx * module + dx, y + my * module + dy);
                                }
                            }
                        }
                    }
                }
                y += side * module + line_advance(1) - CELL_HEIGHT_DOTS;
            }
            Placed::Space(dots) => y += dots,
        }
    }
    encode_png(&canvas)
}

fn encode_png(canvas: &Canvas) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, canvas.width, canvas.height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::One);
        let mut writer = encoder
            .write_header()
            .map_err(|e| RenderError::Png(e.to_string()))?;
        let row_bytes = canvas.width.div_ceil(8) as usize;
        let mut data = vec![0u8; row_bytes * canvas.height as usize];
        for y in 0..canvas.height {
            for x in 0..canvas.width {
                // 1 = white in a 1-bit grayscale PNG.
                if !canvas.get(x, y) {
                    data[y as usize * row_bytes + (x / 8) as usize] |= 0x80 >> (x % 8);
                }
            }
        }
        writer
            .write_image_data(&data)
            .map_err(|e| RenderError::Png(e.to_string()))?;
    }
    Ok(out)
}

/// A sample ticket for previews and benchmarks: number 7 of `service` (default: the service
/// with the most documents to bring), with an appointment at the next full half hour after
/// `now` and booking `BK-4711-0815-2342`, or a walk-in.
pub fn sample_ticket(
    catalog: &Catalog,
    service: Option<&crate::domain::ServiceId>,
    appointment: bool,
    now: Millis,
) -> Option<Ticket> {
    use crate::domain::{BookingId, PrintState, TicketNumber, TicketState};
    let service = match service {
        Some(id) => catalog.services.get(id)?,
        None => catalog
            .services
            .values()
            .max_by_key(|s| (s.documents.len(), std::cmp::Reverse(s.id.clone())))?,
    };
    let half_hour = 30 * crate::clock::MINUTE;
    let origin = if appointment {
        TicketOrigin::Appointment {
            booking: BookingId::new("BK-4711-0815-2342".to_string()),
            slot_start: (now / half_hour + 1) * half_hour,
        }
    } else {
        TicketOrigin::WalkIn { booking: None }
    };
    Some(Ticket {
        number: TicketNumber::new(format!("{}-007", service.prefix)),
        day: catalog.calendar.day_of(now),
        sequence: 7,
        service: service.id.clone(),
        origin,
        priority: crate::domain::PRIORITY_NORMAL,
        preferred_desk: None,
        preferred_until: None,
        state: TicketState::Waiting,
        issued_at: now,
        queued_at: now,
        not_before: None,
        calls: 0,
        called_at: None,
        serving_since: None,
        finished_at: None,
        forwards: 0,
        print: PrintState::Pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn catalog(ticket_section: &str) -> Catalog {
        let text = crate::config::DEMO_CONFIG.replace(
            "[ticket]\nlanguages = [\"de\"]\nqr = \"status_url\"\n",
            &format!("[ticket]\n{ticket_section}\n"),
        );
        let config = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        crate::catalog::from_config(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn texts(document: &Document) -> Vec<String> {
        document
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Text { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    const NOW: Millis = 1_795_420_800_000; // 2026-11-23 09:00 Berlin

    #[test]
    fn the_ticket_holds_number_service_time_documents_and_the_status_url() {
        let catalog = catalog("languages = [\"de\"]\nqr = \"status_url\"");
        let ticket = sample_ticket(&catalog, None, true, NOW).unwrap_or_else(|| panic!("sample"));
        let document = ticket_document(&ticket, &catalog, NOW);
        let all = texts(&document).join("\n");
        assert_eq!(document.number, "F-007");
        for expected in [
            "Stadt Musterstadt",
            "Bürgerbüro im Rathaus",
            "Führerscheinangelegenheiten",
            "Termin 09:30",
            "Bitte achten Sie auf die Anzeige.",
            "- Sehtestbescheinigung",
            "23.11.2026 09:00",
        ] {
            assert!(all.contains(expected), "{expected:?} missing in {all}");
        }
        assert!(document.blocks.iter().any(|b| matches!(b,
            Block::Text { text, width: 4, height: 4, .. } if text == "F-007")));
        assert!(document.blocks.contains(&Block::Qr {
            data: "https://termine.musterstadt.de/status/BK-4711-0815-2342".into()
        }));
        assert!(document.validate().is_ok());
    }

    #[test]
    fn a_booking_id_with_url_characters_is_percent_encoded_in_the_status_url() {
        let catalog = catalog("languages = [\"de\"]\nqr = \"status_url\"");
        let mut ticket =
            sample_ticket(&catalog, None, true, NOW).unwrap_or_else(|| panic!("sample"));
        ticket.origin = TicketOrigin::Appointment {
            booking: crate::domain::BookingId::new("BK 1/../ä?x=1#\n\u{7}"),
            slot_start: NOW,
        };
        assert_eq!(
            qr_payload(&ticket, &catalog).as_deref(),
            Some("https://termine.musterstadt.de/status/BK%201%2F..%2F%C3%A4%3Fx%3D1%23%0A%07")
        );
    }

    #[test]
    fn walk_ins_get_their_call_number_and_both_languages_print_when_asked() {
        let catalog = catalog("languages = [\"de\", \"en\"]\nqr = \"status_url\"");
        let ticket = sample_ticket(&catalog, None, false, NOW).unwrap_or_else(|| panic!("sample"));
        let document = ticket_document(&ticket, &catalog, NOW);
        assert!(document.blocks.contains(&Block::Qr {
            data: "F-007".into()
        }));
        let all = texts(&document).join("\n");
        assert!(all.contains("Bitte mitbringen:\nPlease bring:"), "{all}");
        assert!(
            all.contains("- Sehtestbescheinigung\n  Eye test certificate"),
            "{all}"
        );
        assert!(!all.contains("Termin"), "{all}");
        let none = catalog_with_qr_none();
        let ticket = sample_ticket(&none, None, true, NOW).unwrap_or_else(|| panic!("sample"));
        let document = ticket_document(&ticket, &none, NOW);
        assert!(
            !document
                .blocks
                .iter()
                .any(|b| matches!(b, Block::Qr { .. }))
        );
    }

    fn catalog_with_qr_none() -> Catalog {
        catalog("languages = [\"en\"]\nqr = \"none\"")
    }

    #[test]
    fn bad_ticket_sections_are_reported() {
        for (section, expected) in [
            (
                "languages = [\"fr\"]\nqr = \"none\"",
                "is not \"de\" or \"en\"",
            ),
            ("languages = [\"de\", \"de\"]\nqr = \"none\"", "given twice"),
            ("languages = []\nqr = \"none\"", "one or two"),
            (
                "qr = \"status_url\"\nstatus_url = \"x\"\n[dummy]",
                "unknown field",
            ),
        ] {
            let text = crate::config::DEMO_CONFIG.replace(
                "[ticket]\nlanguages = [\"de\"]\nqr = \"status_url\"\nstatus_url = \"https://termine.musterstadt.de/status/{booking}\"\n",
                &format!("[ticket]\n{section}\n"),
            );
            let err = Config::parse(&text, "t.toml").err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(expected)),
                "{section}: {err:?}"
            );
        }
        let text = crate::config::DEMO_CONFIG.replace("{booking}", "{name}");
        let err = Config::parse(&text, "t.toml").err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("placeholders")),
            "{err:?}"
        );
    }
}
