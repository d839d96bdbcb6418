//! Refused commands in words a clerk can act on: the engine's error codes as German and
//! English sentences (`refusal_text`), and the HTTP answers for them.

use super::json_reply;
use leitsystem_runtime::catalog::Catalog;
use leitsystem_runtime::domain::{CommandError, DeskMode, ServiceId};
use leitsystem_runtime::runtime::ExecuteError;
use serde_json::json;
use warp::http::StatusCode;

pub(crate) fn execute_error(e: &ExecuteError, catalog: &Catalog) -> warp::reply::Response {
    let status = match e {
        ExecuteError::Rejected(r) if r.code().starts_with("unknown_") => StatusCode::NOT_FOUND,
        // Not the request's fault, and it works once the clock is synchronised.
        ExecuteError::Rejected(CommandError::ClockUnsynchronised { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ExecuteError::Rejected(_) => StatusCode::CONFLICT,
        ExecuteError::Storage(_) | ExecuteError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    let (de, en) = refusal_text(e, catalog);
    json_reply(
        status,
        &json!({"error": e.code(), "message": e.to_string(), "text": {"de": de, "en": en}}),
    )
}

/// German and English words for a refused command, as the clerk console and the kiosk show
/// them: what happened and what to do next (the `message` stays the engine's own English).
pub fn refusal_text(e: &ExecuteError, catalog: &Catalog) -> (String, String) {
    let service_name = |service: &ServiceId| {
        catalog.services.get(service).map_or_else(
            || (service.to_string(), service.to_string()),
            |s| (s.name.de.clone(), s.name.en.clone()),
        )
    };
    let state_words = |state: &str| match state {
        "waiting" => ("wartet", "waiting"),
        "called" => ("aufgerufen", "called"),
        "serving" => ("in Bearbeitung", "being served"),
        "parked" => ("geparkt", "parked"),
        "done" => ("erledigt", "done"),
        "no_show" => ("nicht erschienen", "a no-show"),
        "closed" => ("abgeschlossen", "closed"),
        _ => ("in einem anderen Zustand", "in another state"),
    };
    let rejected = match e {
        ExecuteError::Rejected(r) => r,
        ExecuteError::Storage(_) | ExecuteError::ShuttingDown => {
            return (
                "Das Leitsystem kann gerade nicht speichern – bitte gleich noch einmal.".into(),
                "The system cannot store right now – please try again shortly.".into(),
            );
        }
    };
    match rejected {
        CommandError::DeskNotOpen { mode, .. } => {
            let (de, en) = match mode {
                DeskMode::Paused => ("hat Pause", "is paused"),
                _ => ("ist geschlossen", "is closed"),
            };
            (
                format!("Der Platz {de} – bitte zuerst „Öffnen“ drücken."),
                format!("The desk {en} – press “Open” first."),
            )
        }
        CommandError::DeskIdle { .. } => (
            "Gerade ist hier niemand aufgerufen – mit „Nächster“ den nächsten Besuch aufrufen."
                .into(),
            "Nobody is called here right now – press “Next” to call the next visitor.".into(),
        ),
        CommandError::DeskBusy { ticket, .. } => (
            format!("Noch bei {ticket} – bitte erst „Fertig“, „Nicht erschienen“ oder „Parken“."),
            format!("Still with {ticket} – press “Done”, “No-show” or “Park” first."),
        ),
        CommandError::WrongTicketState { ticket, state, .. } => {
            let (de, en) = state_words(state);
            (
                format!("Das geht gerade nicht: {ticket} ist {de}."),
                format!("Not possible right now: {ticket} is {en}."),
            )
        }
        CommandError::NothingWaiting { .. } => (
            "Im Moment wartet niemand auf diesen Platz.".into(),
            "Nobody is waiting for this desk right now.".into(),
        ),
        CommandError::NothingParked { .. } => (
            "Hier ist niemand geparkt.".into(),
            "Nobody is parked at this desk.".into(),
        ),
        CommandError::ServiceNotServed { desk, service } => {
            let (de, en) = service_name(service);
            let label = catalog.desks.get(desk).map_or_else(
                || (desk.to_string(), desk.to_string()),
                |d| (d.label.de.clone(), d.label.en.clone()),
            );
            (
                format!(
                    "{} bearbeitet „{de}“ nicht – bitte einen anderen Platz wählen.",
                    label.0
                ),
                format!(
                    "{} does not handle “{en}” – please choose another desk.",
                    label.1
                ),
            )
        }
        CommandError::InvalidForward { reason } => (
            format!("Dorthin kann nicht weitergeleitet werden ({reason})."),
            format!("Cannot forward there ({reason})."),
        ),
        CommandError::UnknownTicket { ticket } => (
            format!("Die Nummer {ticket} gibt es heute nicht."),
            format!("There is no number {ticket} today."),
        ),
        CommandError::UnknownDesk { desk } => (
            format!("Den Platz „{desk}“ gibt es nicht."),
            format!("There is no desk “{desk}”."),
        ),
        CommandError::UnknownService { service } => (
            format!("Das Anliegen „{service}“ gibt es nicht."),
            format!("There is no service “{service}”."),
        ),
        CommandError::UnknownAlarm { alarm } => (
            format!("Einen stillen Alarm Nr. {alarm} gibt es heute nicht."),
            format!("There is no silent alarm no. {alarm} today."),
        ),
        CommandError::NumbersExhausted { prefix } => (
            format!(
                "Die Nummern für {prefix} sind für heute aufgebraucht – bitte die Verwaltung informieren."
            ),
            format!(
                "The numbers for {prefix} are used up for today – please tell the administrator."
            ),
        ),
        CommandError::IdempotencyKeyReused { .. } => (
            "Diese Anfrage wurde schon für etwas anderes benutzt – bitte die Seite neu laden."
                .into(),
            "This request was already used for something else – please reload the page.".into(),
        ),
        CommandError::ClockUnsynchronised { .. } => (
            "Der Tag ist noch nicht gestartet: Die Uhrzeit ist nicht synchronisiert. Bitte die \
             Verwaltung informieren (Uhrzeit auf /admin bestätigen)."
                .into(),
            "The day has not started: the clock is not synchronised. Please tell the \
             administrator (confirm the time on /admin)."
                .into(),
        ),
        other => (format!("Abgelehnt: {other}"), format!("Refused: {other}")),
    }
}
