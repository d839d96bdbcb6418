//! `[ticket]`: the printed ticket's layout, and its checks.

use super::Problem;
use leitsystem_core::catalog::{TicketQr, TicketTexts};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::HashSet;

/// `[ticket]`: the layout of the printed ticket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketConfig {
    /// Languages printed, in order: `["de"]`, `["en"]`, `["de", "en"]` or `["en", "de"]`.
    #[serde(default = "default_languages")]
    pub languages: Spanned<Vec<String>>,
    /// What the QR code holds.
    #[serde(default)]
    pub qr: TicketQr,
    /// Status URL template: `{booking}`, `{ticket}`, `{day}` and `{site}` are replaced.
    #[serde(default)]
    pub status_url: Option<Spanned<String>>,
    /// Fixed texts of the ticket.
    #[serde(default)]
    pub texts: TicketTexts,
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            languages: Spanned::new(0..0, default_languages_vec()),
            qr: TicketQr::default(),
            status_url: None,
            texts: TicketTexts::default(),
        }
    }
}

pub(crate) fn default_languages_vec() -> Vec<String> {
    vec!["de".to_string()]
}

pub(crate) fn default_languages() -> Spanned<Vec<String>> {
    Spanned::new(0..0, default_languages_vec())
}

/// Placeholders a status URL template may use.
pub const STATUS_URL_PLACEHOLDERS: [&str; 4] = ["{booking}", "{ticket}", "{day}", "{site}"];

pub(crate) fn validate_ticket(ticket: &TicketConfig, out: &mut Vec<Problem>) {
    let languages = ticket.languages.get_ref();
    let mut seen = HashSet::new();
    if languages.is_empty() || languages.len() > 2 {
        out.push((
            ticket.languages.span(),
            "ticket.languages needs one or two of \"de\" and \"en\"".to_string(),
        ));
    }
    for language in languages {
        if language != "de" && language != "en" {
            out.push((
                ticket.languages.span(),
                format!("ticket language '{language}' is not \"de\" or \"en\""),
            ));
        } else if !seen.insert(language) {
            out.push((
                ticket.languages.span(),
                format!("ticket language '{language}' given twice"),
            ));
        }
    }
    match (&ticket.qr, &ticket.status_url) {
        (TicketQr::StatusUrl, None) => out.push((
            0..0,
            "ticket.qr = \"status_url\" needs ticket.status_url".to_string(),
        )),
        (_, Some(url)) => {
            let template = url.get_ref();
            let mut rest = template.clone();
            for placeholder in STATUS_URL_PLACEHOLDERS {
                rest = rest.replace(placeholder, "");
            }
            if rest.contains('{') || rest.contains('}') {
                out.push((
                    url.span(),
                    format!(
                        "ticket.status_url may only use the placeholders {}",
                        STATUS_URL_PLACEHOLDERS.join(", ")
                    ),
                ));
            }
            if template.len() > 150 || template.chars().any(char::is_whitespace) {
                out.push((
                    url.span(),
                    "ticket.status_url must be at most 150 characters without spaces (it \
                     becomes a QR code)"
                        .to_string(),
                ));
            }
        }
        _ => {}
    }
}
