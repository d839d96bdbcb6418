//! What the foyer kiosk shows after a scan: the outcome of every scanner check-in in plain
//! words, in German and English. The plugin host publishes a [`ScanResult`] per scan on a
//! broadcast channel ([`ScanFeed`]); the kiosk page receives it over its WebSocket.
//!
//! [`refusal_text`] is the one table from refusal codes (`CommandError::code` and
//! `TokenError::code`) to the texts a visitor reads. Never personal data: a result carries the
//! call number, the desk, the waiting area and the reason, nothing a booking holds about a
//! person.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::catalog::Catalog;
use crate::display::Bilingual;
use crate::domain::Outcome;

/// Scan results kept for slow kiosk pages before the oldest are dropped.
pub const SCAN_FEED_CAPACITY: usize = 64;

/// The channel of scan results (subscribe per kiosk page).
pub type ScanFeed = broadcast::Sender<ScanResult>;

/// A new scan-result channel.
pub fn scan_feed() -> ScanFeed {
    broadcast::channel(SCAN_FEED_CAPACITY).0
}

/// The outcome of one scan, as the kiosk shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanResult {
    /// Checked in (a ticket was issued) or refused.
    pub accepted: bool,
    /// The call number, when accepted.
    pub ticket: Option<String>,
    /// The desk label, when the booking names a desk.
    pub desk: Option<Bilingual>,
    /// Where to wait, when accepted.
    pub waiting_area: Option<Bilingual>,
    /// Estimated wait in minutes, when accepted.
    pub estimated_wait_minutes: Option<u32>,
    /// Machine-readable refusal code (`CommandError`/`TokenError` code), when refused.
    pub code: Option<String>,
    /// The headline: welcome, or why the code was refused.
    pub message: Bilingual,
    /// What to do next.
    pub advice: Bilingual,
    /// Which scanner.
    pub device: String,
    /// When (ms since the epoch).
    pub at: i64,
}

fn text(de: &str, en: &str) -> Bilingual {
    Bilingual {
        de: de.to_string(),
        en: en.to_string(),
    }
}

/// Reason and advice for a refused scan, by refusal code. The one table of kiosk texts.
pub fn refusal_text(code: &str) -> (Bilingual, Bilingual) {
    let ask = (
        "Bitte wenden Sie sich an den Empfang.",
        "Please ask at the reception desk.",
    );
    let (reason, advice) = match code {
        "booking_not_accepted" => (
            (
                "Dieser Termin kann hier nicht angenommen werden.",
                "This appointment cannot be taken here.",
            ),
            ask,
        ),
        "unknown_booking" => (
            (
                "Diesen Termin kennen wir nicht.",
                "We cannot find this appointment.",
            ),
            ask,
        ),
        "booking_cancelled" | "booking_deleted" => (
            (
                "Dieser Termin wurde abgesagt.",
                "This appointment was cancelled.",
            ),
            (
                "Bitte ziehen Sie eine Wartenummer oder buchen Sie einen neuen Termin.",
                "Please take a number or book a new appointment.",
            ),
        ),
        "already_checked_in" => (
            (
                "Sie sind bereits angemeldet.",
                "You are already checked in.",
            ),
            (
                "Bitte warten Sie, bis Ihre Nummer aufgerufen wird.",
                "Please wait until your number is called.",
            ),
        ),
        "wrong_day" => (
            (
                "Ihr Termin ist nicht heute.",
                "Your appointment is not today.",
            ),
            (
                "Bitte kommen Sie am Tag Ihres Termins wieder.",
                "Please come back on the day of your appointment.",
            ),
        ),
        "too_early" => (
            (
                "Für Ihren Termin ist es noch zu früh.",
                "It is too early for your appointment.",
            ),
            (
                "Bitte scannen Sie den Code kurz vor Ihrem Termin noch einmal.",
                "Please scan the code again shortly before your appointment.",
            ),
        ),
        "too_late" => (
            (
                "Ihr Termin ist bereits vorbei.",
                "Your appointment has passed.",
            ),
            ask,
        ),
        "clock_unsynchronised" => (
            (
                "Die Anmeldung ist gerade nicht möglich.",
                "Check-in is not possible right now.",
            ),
            ask,
        ),
        "numbers_exhausted" => (
            (
                "Heute können keine Nummern mehr vergeben werden.",
                "No more numbers can be issued today.",
            ),
            ask,
        ),
        "unknown_service" | "service_not_served" => (
            (
                "Dieses Anliegen wird hier nicht angeboten.",
                "This service is not offered here.",
            ),
            ask,
        ),
        "too_long" | "no_token" | "malformed" | "unsupported_version" | "not_a_code" => (
            (
                "Dieser Code ist kein Termin-Code.",
                "This code is not an appointment code.",
            ),
            (
                "Bitte scannen Sie den QR-Code aus Ihrer Terminbestätigung.",
                "Please scan the QR code from your appointment confirmation.",
            ),
        ),
        "unknown_key" | "forged" => (
            ("Dieser Code ist ungültig.", "This code is not valid."),
            ask,
        ),
        "unsigned" => (
            (
                "Dieser Code wird nicht angenommen.",
                "This code is not accepted.",
            ),
            (
                "Bitte scannen Sie den QR-Code aus Ihrer Terminbestätigung.",
                "Please scan the QR code from your appointment confirmation.",
            ),
        ),
        _ => (
            (
                "Die Anmeldung hat nicht geklappt.",
                "The check-in did not work.",
            ),
            ask,
        ),
    };
    (text(reason.0, reason.1), text(advice.0, advice.1))
}

/// A refused scan.
pub fn refused(code: &str, device: &str, at: i64) -> ScanResult {
    let (message, advice) = refusal_text(code);
    ScanResult {
        accepted: false,
        ticket: None,
        desk: None,
        waiting_area: None,
        estimated_wait_minutes: None,
        code: Some(code.to_string()),
        message,
        advice,
        device: device.to_string(),
        at,
    }
}

/// The result of an accepted scan (a ticket was issued), or `None` for any other outcome.
pub fn accepted(outcome: &Outcome, catalog: &Catalog, device: &str, at: i64) -> Option<ScanResult> {
    let Outcome::TicketIssued {
        ticket,
        service,
        desk,
        estimated_wait_minutes,
        late_as_walk_in,
        ..
    } = outcome
    else {
        return None;
    };
    let waiting_area = catalog
        .services
        .get(service)
        .and_then(|s| catalog.departments.get(&s.department))
        .map(|d| Bilingual::from(&d.waiting_area));
    let desk = desk
        .as_ref()
        .and_then(|d| catalog.desks.get(d))
        .map(|d| Bilingual::from(&d.label));
    let advice = if *late_as_walk_in {
        text(
            "Ihr Termin ist vorbei; Sie werden als Besucher ohne Termin aufgerufen.",
            "Your appointment has passed; you will be called as a walk-in.",
        )
    } else {
        text(
            "Bitte warten Sie, bis Ihre Nummer aufgerufen wird.",
            "Please wait until your number is called.",
        )
    };
    Some(ScanResult {
        accepted: true,
        ticket: Some(ticket.to_string()),
        desk,
        waiting_area,
        estimated_wait_minutes: Some(*estimated_wait_minutes),
        code: None,
        message: text("Willkommen!", "Welcome!"),
        advice,
        device: device.to_string(),
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_code_has_its_own_text_or_the_general_one() {
        for code in [
            "unknown_booking",
            "forged",
            "too_early",
            "malformed",
            "whatever",
        ] {
            let (reason, advice) = refusal_text(code);
            assert!(!reason.de.is_empty() && !reason.en.is_empty(), "{code}");
            assert!(!advice.de.is_empty() && !advice.en.is_empty(), "{code}");
        }
        assert_ne!(refusal_text("forged").0, refusal_text("too_early").0);
    }
}
