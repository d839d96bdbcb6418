//! Desk lights: what the LEDs on the clerks' button boxes show, derived from the engine's
//! state after every committed burst of events that can change one, and sent to each buttons
//! device as one `desks` message for its desks (at start, and whenever it changes).
//!
//! Per desk: `called` while a visitor is called there and not yet being served (the LED is
//! lit), and `alarm_at`, when the desk's latest silent alarm of the day that nobody has
//! acknowledged yet was raised (the driver blinks the LED until the acknowledgement, at most
//! its `alarm_blink_s`). Staff-facing only: this never reaches a display.

use leitsystem_plugin::HostMessage;
use leitsystem_plugin::messages::DeskLight;
use tokio_util::sync::CancellationToken;

use leitsystem_runtime::domain::TicketState;
use leitsystem_runtime::runtime::EngineHandle;
use leitsystem_runtime::runtime::StateView;

/// Most events folded into one look at the state.
const BURST: usize = 512;

/// The lights of `desks` (every desk when empty), in the order of the state's desks.
pub fn desk_lights(view: &StateView, desks: &[String]) -> Vec<DeskLight> {
    view.desks
        .iter()
        .filter(|desk| desks.is_empty() || desks.iter().any(|d| d == desk.id.as_str()))
        .map(|desk| {
            let called = desk.current.as_ref().is_some_and(|number| {
                view.tickets.iter().any(|t| {
                    &t.number == number
                        && matches!(&t.state, TicketState::Called { desk: at } if at == &desk.id)
                })
            });
            let alarm_at = view
                .alarms
                .iter()
                .filter(|alarm| alarm.desk == desk.id && alarm.acknowledged.is_none())
                .map(|alarm| alarm.at)
                .max();
            DeskLight {
                desk: desk.id.to_string(),
                called,
                alarm_at,
            }
        })
        .collect()
}

/// A buttons device that gets desk lights: its id and desks (empty = all).
#[derive(Debug, Clone)]
pub struct LightedDevice {
    /// Device id.
    pub id: String,
    /// Its desks.
    pub desks: Vec<String>,
}

/// Follows the committed events and hands each device its lights through `deliver` whenever
/// they changed (the first time at start). Ends at `shutdown` or when the engine is gone.
pub async fn feed(
    engine: EngineHandle,
    devices: Vec<LightedDevice>,
    deliver: impl Fn(&str, HostMessage) + Send,
    shutdown: CancellationToken,
) {
    if devices.is_empty() {
        return;
    }
    // Subscribed before the first look: no change between the two is missed.
    let mut committed = engine.feed();
    let mut sent: Vec<Option<Vec<DeskLight>>> = vec![None; devices.len()];
    loop {
        match engine.state_view().await {
            Ok(view) => {
                for (device, last) in devices.iter().zip(sent.iter_mut()) {
                    let lights = desk_lights(&view, &device.desks);
                    if last.as_ref() != Some(&lights) {
                        deliver(
                            &device.id,
                            HostMessage::Desks {
                                desks: lights.clone(),
                            },
                        );
                        *last = Some(lights);
                    }
                }
            }
            Err(e) => tracing::warn!("desk lights: cannot read the state: {e}"),
        }
        // Wait for a burst that can change a light: a bulk booking sync (thousands of
        // `booking_upserted`) does not make the state be copied again and again.
        loop {
            let burst = tokio::select! {
                _ = shutdown.cancelled() => return,
                burst = committed.recv_batch(BURST, std::time::Duration::ZERO) => burst,
            };
            match burst {
                None => return,
                Some(records) if records.iter().any(|r| !r.event.is_paperwork()) => break,
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leitsystem_runtime::domain::{
        DeskId, DeskMode, DeskState, ServiceId, Ticket, TicketNumber, TicketOrigin,
    };
    use leitsystem_runtime::engine::{Acknowledgement, AlarmRecord};

    fn desk(id: &str, current: Option<&str>) -> DeskState {
        DeskState {
            id: DeskId::new(id),
            mode: DeskMode::Open,
            current: current.map(TicketNumber::new),
            since: 0,
        }
    }

    fn view(desks: Vec<DeskState>, tickets: Vec<Ticket>, alarms: Vec<AlarmRecord>) -> StateView {
        StateView {
            day: None,
            last_seq: 0,
            tickets,
            desks,
            waiting: Default::default(),
            estimated_wait_minutes: Default::default(),
            alarms,
            clock_hold: None,
            clock_wait: None,
        }
    }

    fn ticket(number: &str, state: TicketState) -> Ticket {
        Ticket {
            number: TicketNumber::new(number),
            day: jiff::civil::date(2026, 12, 7),
            sequence: 1,
            service: ServiceId::new("meldung"),
            origin: TicketOrigin::WalkIn { booking: None },
            priority: 1,
            preferred_desk: None,
            preferred_until: None,
            state,
            issued_at: 0,
            queued_at: 0,
            not_before: None,
            calls: 1,
            called_at: Some(0),
            serving_since: None,
            finished_at: None,
            forwards: 0,
            print: Default::default(),
        }
    }

    #[test]
    fn a_desk_is_lit_while_its_visitor_is_called_and_its_latest_alarm_is_reported() {
        let called_at_1 = TicketState::Called {
            desk: DeskId::new("1"),
        };
        let serving_at_2 = TicketState::Serving {
            desk: DeskId::new("2"),
        };
        let alarm = |seq, at, desk: &str| AlarmRecord {
            seq,
            at,
            desk: DeskId::new(desk),
            source: "buttons:b".into(),
            acknowledged: None,
        };
        let acknowledged = |seq, at, desk: &str| AlarmRecord {
            acknowledged: Some(Acknowledgement {
                at: at + 1,
                by: "web:chef".into(),
            }),
            ..alarm(seq, at, desk)
        };
        let state = view(
            vec![
                desk("1", Some("A1")),
                desk("2", Some("A2")),
                desk("3", None),
            ],
            vec![ticket("A1", called_at_1), ticket("A2", serving_at_2)],
            vec![
                alarm(4, 1000, "3"),
                alarm(9, 5000, "3"),
                alarm(7, 3000, "1"),
                // Acknowledged alarms do not count: a later one of desk 3, desk 2's only one.
                acknowledged(11, 6000, "3"),
                acknowledged(12, 7000, "2"),
            ],
        );
        let lights = desk_lights(&state, &[]);
        let summary: Vec<(&str, bool, Option<i64>)> = lights
            .iter()
            .map(|l| (l.desk.as_str(), l.called, l.alarm_at))
            .collect();
        assert_eq!(
            summary,
            [
                ("1", true, Some(3000)),
                ("2", false, None),
                ("3", false, Some(5000))
            ]
        );
        // Only the device's desks.
        let only = desk_lights(&state, &["2".to_string()]);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].desk, "2");
    }
}
