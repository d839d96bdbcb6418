//! Inputs → commands: each device's router turns its scans and button presses, in order, into
//! commands through the engine's handle, and records print outcomes.

use super::{
    DeviceEvent, DeviceSpec, PrintLedger, Supervise, now_millis, record_print, reprint_failed,
    update,
};
use leitsystem_plugin::messages::{ButtonAction, Paper, Role, decode_plugin_message};
use leitsystem_plugin::{LogLevel, PluginMessage};
use leitsystem_runtime::catalog::Catalog;
use leitsystem_runtime::domain::{BookingId, Command, CommandRequest, DeskId, PrintOutcome};
use leitsystem_runtime::runtime::EngineHandle;
use leitsystem_runtime::status::DeviceRegistry;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) fn button_command(action: ButtonAction, desk: DeskId) -> Command {
    match action {
        ButtonAction::Next => Command::CallNext { desk },
        ButtonAction::Recall => Command::Recall { desk },
        ButtonAction::Start => Command::StartService { desk },
        ButtonAction::Finish => Command::Finish { desk },
        ButtonAction::NoShow => Command::NoShow { desk },
        ButtonAction::Park => Command::Park { desk },
        ButtonAction::Resume => Command::ResumeAtDesk { desk, ticket: None },
        ButtonAction::Open => Command::OpenDesk { desk },
        ButtonAction::Pause => Command::PauseDesk { desk },
        ButtonAction::Close => Command::CloseDesk { desk },
        ButtonAction::Alarm => Command::SilentAlarm { desk },
    }
}

/// Turns device reports into engine commands and health updates.
/// What a scanned code asks for. With token keys configured, a signed token (verified here,
/// before anything looks at the store) checks in even before its booking arrived; a plain
/// booking id only when unsigned codes are accepted.
pub(crate) fn scanned_command(
    code: &str,
    catalog: &Catalog,
) -> Result<Command, (&'static str, String)> {
    if code.is_empty() || code.len() > leitsystem_runtime::token::MAX_INPUT_BYTES {
        return Err((
            "not_a_code",
            format!("a code of {} bytes is no check-in code", code.len()),
        ));
    }
    if !catalog.token_keys.is_empty() {
        match leitsystem_runtime::token::verify(code, &catalog.site_id, &catalog.token_keys) {
            Ok(claims) => {
                return Ok(Command::CheckInWithToken {
                    slot_start: claims.slot_start(&catalog.calendar),
                    booking: claims.booking,
                    service: claims.service,
                    version: claims.version,
                });
            }
            Err(leitsystem_runtime::token::TokenError::NoToken) if catalog.accept_unsigned => {}
            Err(leitsystem_runtime::token::TokenError::NoToken) => {
                return Err((
                    "unsigned",
                    "no signed check-in code found, and unsigned codes are not accepted".into(),
                ));
            }
            Err(e) => return Err((e.code(), format!("{} ({})", e, e.code()))),
        }
    }
    if !catalog.accept_unsigned {
        return Err(("unsigned", "unsigned codes are not accepted".to_string()));
    }
    Ok(Command::CheckIn {
        booking: BookingId::new(code),
    })
}

/// What the devices' routers share.
pub(crate) struct Router {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) engine: EngineHandle,
    pub(crate) registry: DeviceRegistry,
    pub(crate) scans: leitsystem_runtime::kiosk::ScanFeed,
    pub(crate) ledger: PrintLedger,
    /// Printers that may have an open ticket waiting for a reprint. A printer joins with every
    /// failed print and leaves after a reprint scan; a successful print scans only then, so
    /// printing a ticket never copies the whole day.
    pub(crate) failures_outstanding: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// One device's router: its messages in order, each turned into a command and awaited, while
/// the other devices' routers go on. Inputs of several devices thus reach the engine together
/// and share a group commit; one slow commit holds up only the device that asked for it.
pub(crate) async fn route_device(
    router: Arc<Router>,
    spec: DeviceSpec,
    supervisor: SyncSender<Supervise>,
    mut events: mpsc::Receiver<DeviceEvent>,
    shutdown: CancellationToken,
) {
    // The last readiness this printer reported: becoming ready reprints failed tickets.
    let mut printer_ready: Option<bool> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Some(e) => e,
                None => return,
            },
        };
        router
            .handle(&spec, &supervisor, &mut printer_ready, event)
            .await;
    }
}

/// Jobs no printer answered: lost on the way (a full queue, a restarting driver, a printer
/// switched off). Recorded failed once a second, so they are reprinted.
pub(crate) async fn watch_overdue_prints(router: Arc<Router>, shutdown: CancellationToken) {
    let mut overdue_check = tokio::time::interval(Duration::from_secs(1));
    overdue_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = overdue_check.tick() => {}
        }
        for (job, printer, waited) in router.ledger.take_overdue() {
            let reason = format!("no answer from the printer within {} s", waited.as_secs());
            tracing::warn!(device = %printer, job = %job, "{reason}");
            update(&router.registry, &printer, |h| {
                h.print_failures += 1;
                h.last_error = Some(format!("print {job}: {reason}"));
            });
            record_print(
                &router.engine,
                &printer,
                &job,
                PrintOutcome::Failed { reason },
            )
            .await;
            router.set_failures_outstanding(&printer, true);
        }
    }
}

impl Router {
    pub(crate) fn failures_outstanding(&self, printer: &str) -> bool {
        self.failures_outstanding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(printer)
    }

    pub(crate) fn set_failures_outstanding(&self, printer: &str, outstanding: bool) {
        let mut set = self
            .failures_outstanding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if outstanding {
            set.insert(printer.to_string());
        } else {
            set.remove(printer);
        }
    }

    /// One message of device `spec`: a command for the engine, a health update, or a log line.
    pub(crate) async fn handle(
        &self,
        spec: &DeviceSpec,
        supervisor: &SyncSender<Supervise>,
        printer_ready: &mut Option<bool>,
        event: DeviceEvent,
    ) {
        let id = event.device.to_string();
        let message = match decode_plugin_message(&event.bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(device = %id, "malformed message from the plugin: {e}");
                return;
            }
        };
        let command = match message {
            PluginMessage::Scanned { code } if spec.role == Role::Scanner => {
                match scanned_command(code.trim(), &self.catalog) {
                    Ok(command) => Some((None, command)),
                    Err((code, reason)) => {
                        tracing::warn!(device = %id, "scanned code refused: {reason}");
                        let _ = self.scans.send(leitsystem_runtime::kiosk::refused(
                            code,
                            &id,
                            now_millis(),
                        ));
                        return;
                    }
                }
            }
            PluginMessage::Button {
                desk,
                action,
                event_id,
            } if spec.role == Role::Buttons => {
                if !spec.desks.is_empty() && !spec.desks.contains(&desk) {
                    tracing::warn!(device = %id, desk = %desk, "button for a desk this device is not bound to");
                    return;
                }
                Some((
                    Some(format!("{id}:{event_id}")),
                    button_command(action, DeskId::new(desk)),
                ))
            }
            PluginMessage::Connection { connected, detail } => {
                tracing::info!(device = %id, connected, detail = detail.as_deref().unwrap_or(""), "connection");
                update(&self.registry, &id, |h| h.connected = Some(connected));
                if !connected {
                    // Unplugged: once it is back and ready, failed tickets are reprinted.
                    *printer_ready = Some(false);
                }
                None
            }
            PluginMessage::PrintDone { job } => {
                tracing::info!(device = %id, job = %job, "printed");
                self.ledger.answered(&job);
                update(&self.registry, &id, |h| h.printed += 1);
                let recorded = record_print(&self.engine, &id, &job, PrintOutcome::Printed).await;
                if recorded
                    && self.failures_outstanding(&id)
                    && reprint_failed(&self.engine, &id).await
                {
                    self.set_failures_outstanding(&id, false);
                }
                None
            }
            PluginMessage::PrintFailed { job, reason } => {
                tracing::warn!(device = %id, job = %job, "print failed: {reason}");
                self.ledger.answered(&job);
                update(&self.registry, &id, |h| {
                    h.print_failures += 1;
                    h.last_error = Some(format!("print {job} failed: {reason}"))
                });
                record_print(&self.engine, &id, &job, PrintOutcome::Failed { reason }).await;
                self.set_failures_outstanding(&id, true);
                None
            }
            PluginMessage::PrinterStatus {
                paper,
                cover_open,
                online,
            } => {
                let ready = online && !cover_open && paper != Paper::Out;
                let was_ready = printer_ready.replace(ready);
                match paper {
                    Paper::NearEnd => {
                        tracing::warn!(device = %id, "paper nearly used up: put in a new roll soon")
                    }
                    Paper::Out => tracing::warn!(device = %id, "paper out"),
                    Paper::Ok => {}
                }
                if cover_open {
                    tracing::warn!(device = %id, "printer cover open");
                }
                let paper = serde_json::to_value(paper)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
                update(&self.registry, &id, |h| {
                    h.paper = paper;
                    h.cover_open = Some(cover_open);
                    h.connected = Some(online && !cover_open);
                });
                if ready
                    && was_ready != Some(true)
                    && self.failures_outstanding(&id)
                    && reprint_failed(&self.engine, &id).await
                {
                    self.set_failures_outstanding(&id, false);
                }
                None
            }
            PluginMessage::Failed { reason } => {
                let _ = supervisor.try_send(Supervise::Restart(reason));
                None
            }
            PluginMessage::Log { level, message } => {
                match level {
                    LogLevel::Debug => tracing::debug!(device = %id, "{message}"),
                    LogLevel::Info => tracing::info!(device = %id, "{message}"),
                    LogLevel::Warn => tracing::warn!(device = %id, "{message}"),
                    LogLevel::Error => tracing::error!(device = %id, "{message}"),
                }
                None
            }
            other => {
                tracing::warn!(device = %id, role = spec.role.as_str(), "message not expected from this role: {other:?}");
                None
            }
        };
        if let Some((request_id, command)) = command {
            let request = CommandRequest {
                request_id,
                source: format!("{}:{id}", spec.role.as_str()),
                command,
            };
            let name = request.command.name();
            let scanned = spec.role == Role::Scanner;
            match self.engine.execute(request).await {
                Ok(executed) if scanned => {
                    // The kiosk shows every scan's outcome.
                    if let Some(result) = leitsystem_runtime::kiosk::accepted(
                        &executed.outcome,
                        &self.catalog,
                        &id,
                        now_millis(),
                    ) {
                        let _ = self.scans.send(result);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(device = %id, command = name, "refused: {e}");
                    if scanned {
                        let _ = self.scans.send(leitsystem_runtime::kiosk::refused(
                            e.code(),
                            &id,
                            now_millis(),
                        ));
                    }
                }
            }
        }
    }
}
