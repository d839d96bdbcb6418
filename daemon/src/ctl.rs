//! `leitsystemd ctl`: one request to a running daemon's control socket, the answer printed.

use super::{CtlAction, EXIT_FAILURE};
use leitsystem::control::{ControlClient, ControlRequest, ControlResponse};
use leitsystem::domain::{
    BookingId, BookingInput, Command, DeskId, ForwardTarget, ServiceId, TicketNumber,
};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub(crate) fn ctl(socket: &Path, request_id: Option<String>, action: CtlAction) -> ExitCode {
    let desk = |d: String| DeskId::new(d);
    let ticket = |t: String| TicketNumber::new(t);
    let command = match action {
        CtlAction::State => return ctl_send(socket, &ControlRequest::State),
        CtlAction::Devices => return ctl_send(socket, &ControlRequest::Devices),
        CtlAction::Verify => return ctl_send(socket, &ControlRequest::Verify),
        CtlAction::Sync => return ctl_send(socket, &ControlRequest::Sync),
        CtlAction::WalkIn { service, priority } => Command::WalkIn {
            service: ServiceId::new(service),
            priority,
        },
        CtlAction::CheckIn { booking } => Command::CheckIn {
            booking: BookingId::new(booking),
        },
        CtlAction::Reprint { ticket } => Command::Reprint {
            ticket: TicketNumber::new(ticket),
        },
        CtlAction::AcknowledgeAlarm { seq } => Command::AcknowledgeAlarm { alarm: seq },
        CtlAction::Next { desk: d } => Command::CallNext { desk: desk(d) },
        CtlAction::Call { desk: d, ticket: t } => Command::CallTicket {
            desk: desk(d),
            ticket: ticket(t),
        },
        CtlAction::Recall { desk: d } => Command::Recall { desk: desk(d) },
        CtlAction::Start { desk: d } => Command::StartService { desk: desk(d) },
        CtlAction::Finish { desk: d } => Command::Finish { desk: desk(d) },
        CtlAction::NoShow { desk: d } => Command::NoShow { desk: desk(d) },
        CtlAction::Forward {
            desk: d,
            service,
            to_desk,
        } => Command::Forward {
            desk: desk(d),
            target: match (service, to_desk) {
                (Some(s), _) => ForwardTarget::Service(ServiceId::new(s)),
                (None, Some(t)) => ForwardTarget::Desk(DeskId::new(t)),
                (None, None) => {
                    let _ = writeln!(std::io::stderr(), "forward needs --service or --to-desk");
                    return ExitCode::from(2);
                }
            },
        },
        CtlAction::Park { desk: d } => Command::Park { desk: desk(d) },
        CtlAction::Resume { ticket: t } => Command::Resume { ticket: ticket(t) },
        CtlAction::Priority {
            ticket: t,
            priority,
        } => Command::SetPriority {
            ticket: ticket(t),
            priority,
        },
        CtlAction::Open { desk: d } => Command::OpenDesk { desk: desk(d) },
        CtlAction::Pause { desk: d } => Command::PauseDesk { desk: desk(d) },
        CtlAction::Close { desk: d } => Command::CloseDesk { desk: desk(d) },
        CtlAction::Booking { json } => match serde_json::from_str::<BookingInput>(&json) {
            Ok(booking) => Command::UpsertBooking { booking },
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "invalid booking JSON: {e}");
                return ExitCode::from(2);
            }
        },
        CtlAction::CancelBooking { booking, version } => Command::CancelBooking {
            booking: BookingId::new(booking),
            version,
        },
        CtlAction::ConfirmClock => Command::ConfirmClock,
    };
    ctl_send(
        socket,
        &ControlRequest::Execute {
            request_id,
            command,
        },
    )
}

pub(crate) fn ctl_send(socket: &Path, request: &ControlRequest) -> ExitCode {
    let response: std::io::Result<ControlResponse> =
        ControlClient::connect(socket).and_then(|mut client| client.request(request));
    match response {
        Ok(response) => {
            let text = serde_json::to_string_pretty(&response).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{text}");
            if response.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "cannot reach leitsystemd at {}: {e}. Is it running? Start the demo with \
                 `bash daemon/demo.sh`; for another daemon give its --config FILE (or \
                 --data-dir DIR, or --socket PATH)",
                socket.display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
