//! What the API shows: the desk view, the kiosk's services and tickets, presence and the
//! evacuation list, devices, statistics and alarms.

use super::{Ctx, error, execute_error, json_reply, parse, too_many, unavailable};
use leitsystem_runtime::catalog::Catalog;
use leitsystem_runtime::display::Bilingual;
use leitsystem_runtime::domain::{
    Command, CommandRequest, DeskId, Outcome, PrintState, ServiceId, Ticket, TicketOrigin,
    TicketState,
};
use leitsystem_runtime::status::DeviceRegistry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use warp::Reply;
use warp::http::StatusCode;

pub(crate) fn text(t: &leitsystem_runtime::config::Text) -> Bilingual {
    t.into()
}

/// One service's waiting line.
#[derive(Debug, Serialize)]
pub(crate) struct Line {
    pub(crate) service: String,
    pub(crate) name: Bilingual,
    pub(crate) prefix: String,
    pub(crate) department: String,
    pub(crate) waiting: u32,
    pub(crate) wait_minutes: u32,
}

pub(crate) async fn lines(
    ctx: &Ctx,
    only: Option<&[ServiceId]>,
) -> Result<Vec<Line>, warp::reply::Response> {
    let view = ctx.engine.queue_view().await.map_err(|_| unavailable())?;
    Ok(ctx
        .api
        .catalog
        .services
        .values()
        .filter(|s| only.is_none_or(|o| o.contains(&s.id)))
        .map(|s| Line {
            service: s.id.to_string(),
            name: text(&s.name),
            prefix: s.prefix.clone(),
            department: s.department.to_string(),
            waiting: view.waiting.get(s.id.as_str()).copied().unwrap_or(0),
            wait_minutes: view
                .estimated_wait_minutes
                .get(s.id.as_str())
                .copied()
                .unwrap_or(0),
        })
        .collect())
}

/// The clerk console's view of one desk.
pub async fn desk_view(ctx: &Ctx, desk: &str) -> Result<Value, warp::reply::Response> {
    let catalog = &ctx.api.catalog;
    let Some(config) = catalog.desks.get(&DeskId::new(desk)) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "unknown_desk",
            format!("unknown desk '{desk}'"),
        ));
    };
    let view = ctx.engine.state_view().await.map_err(|_| unavailable())?;
    let state = view.desks.iter().find(|d| d.id.as_str() == desk);
    let current_ticket = state
        .and_then(|s| s.current.as_ref())
        .and_then(|n| view.tickets.iter().find(|t| &t.number == n));
    let current = current_ticket.map(|t| {
        let service = catalog.services.get(&t.service);
        json!({
            "ticket": t.number,
            "service": t.service,
            "service_name": service.map(|s| text(&s.name)),
            "state": t.state.name(),
            "kind": match t.origin { TicketOrigin::Appointment { .. } => "appointment", TicketOrigin::WalkIn { .. } => "walk_in" },
            "appointment": match &t.origin {
                TicketOrigin::Appointment { slot_start, .. } => Some(catalog.calendar.local_hhmm(*slot_start)),
                TicketOrigin::WalkIn { .. } => None,
            },
            "issued_at": t.issued_at,
            "called_at": t.called_at,
            "serving_since": t.serving_since,
            "calls": t.calls,
            "forwards": t.forwards,
            "documents": service.map(|s| s.documents.iter().map(text).collect::<Vec<_>>()).unwrap_or_default(),
        })
    });
    let parked: Vec<&str> = view
        .tickets
        .iter()
        .filter(|t| matches!(&t.state, TicketState::Parked { desk: d } if d.as_str() == desk))
        .map(|t| t.number.as_str())
        .collect();
    let waiting = lines(ctx, Some(&config.services)).await?;
    // Forward targets for the current visitor: another service, or another desk that serves
    // the visitor's service (the engine refuses any other desk).
    let current_service = current_ticket.map(|t| t.service.clone());
    let forward_services: Vec<Value> = catalog
        .services
        .values()
        .filter(|s| current_service.as_ref() != Some(&s.id))
        .map(|s| json!({"id": s.id, "name": text(&s.name)}))
        .collect();
    let forward_desks: Vec<Value> = catalog
        .desks
        .values()
        .filter(|d| d.id.as_str() != desk)
        .filter(|d| {
            current_service
                .as_ref()
                .is_none_or(|s| d.services.contains(s))
        })
        .map(|d| json!({"id": d.id, "label": text(&d.label)}))
        .collect();
    Ok(json!({
        "desk": desk,
        "label": text(&config.label),
        "department": config.department,
        "mode": state.map(|s| s.mode),
        "since": state.map(|s| s.since),
        "current": current,
        "parked": parked,
        "waiting": waiting,
        "forward": {"services": forward_services, "desks": forward_desks},
        "seq": view.last_seq,
    }))
}

pub(crate) async fn kiosk_services(ctx: &Ctx) -> warp::reply::Response {
    match lines(ctx, None).await {
        Ok(lines) => json_reply(
            StatusCode::OK,
            &json!({"site": ctx.api.catalog.site_name, "services": lines}),
        ),
        Err(answer) => answer,
    }
}

pub(crate) async fn kiosk_ticket(
    ctx: &Ctx,
    body: &[u8],
    ip: Option<IpAddr>,
    request_id: Option<String>,
) -> warp::reply::Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pull {
        service: String,
    }
    let pull: Pull = match parse(body) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    if let Some(ip) = ip {
        let allowed = ctx
            .api
            .kiosk_limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .allow(ip, ctx.api.kiosk_per_minute);
        if let Err(wait) = allowed {
            return too_many(
                "rate_limited",
                wait,
                "too many tickets from this terminal; please wait",
            );
        }
    }
    let request = CommandRequest {
        request_id,
        source: "web:kiosk".to_string(),
        command: Command::WalkIn {
            service: ServiceId::new(pull.service),
            priority: leitsystem_runtime::domain::PRIORITY_NORMAL,
        },
    };
    match ctx.engine.execute(request).await {
        Ok(executed) => match &executed.outcome {
            Outcome::TicketIssued {
                ticket,
                service,
                estimated_wait_minutes,
                ..
            } => {
                let catalog = &ctx.api.catalog;
                let s = catalog.services.get(service);
                let area = s
                    .and_then(|s| catalog.departments.get(&s.department))
                    .map(|d| text(&d.waiting_area));
                json_reply(
                    StatusCode::OK,
                    &json!({
                        "ticket": ticket,
                        "service": service,
                        "service_name": s.map(|s| text(&s.name)),
                        "waiting_area": area,
                        "estimated_wait_minutes": estimated_wait_minutes,
                        "duplicate": executed.duplicate,
                    }),
                )
            }
            other => json_reply(StatusCode::OK, &json!({ "outcome": other })),
        },
        Err(e) => execute_error(&e, &ctx.api.catalog),
    }
}

pub(crate) fn since(t: &Ticket) -> i64 {
    match t.state {
        TicketState::Serving { .. } => t.serving_since.unwrap_or(t.queued_at),
        TicketState::Called { .. } => t.called_at.unwrap_or(t.queued_at),
        _ => t.queued_at,
    }
}

/// One person in the building.
#[derive(Debug, Serialize)]
pub(crate) struct Present {
    pub(crate) ticket: String,
    pub(crate) service: String,
    pub(crate) service_name: Bilingual,
    pub(crate) state: &'static str,
    pub(crate) desk: Option<String>,
    pub(crate) desk_label: Option<Bilingual>,
    pub(crate) waiting_area: Option<Bilingual>,
    pub(crate) since: i64,
    pub(crate) since_local: String,
    pub(crate) issued_at: i64,
    pub(crate) appointment: Option<String>,
    pub(crate) name: Option<String>,
}

pub(crate) async fn presence(ctx: &Ctx) -> Result<Vec<Present>, warp::reply::Response> {
    let catalog = &ctx.api.catalog;
    let view = ctx.engine.state_view().await.map_err(|_| unavailable())?;
    let open: Vec<&Ticket> = view
        .tickets
        .iter()
        .filter(|t| !t.state.is_final())
        .collect();
    let bookings: Vec<_> = open
        .iter()
        .filter_map(|t| match &t.origin {
            TicketOrigin::Appointment { booking, .. } => Some(booking.clone()),
            TicketOrigin::WalkIn { booking } => booking.clone(),
        })
        .collect();
    let personal = ctx
        .engine
        .personal_data(bookings)
        .await
        .map_err(|_| unavailable())?;
    let mut people: Vec<Present> = open
        .into_iter()
        .map(|t| {
            let booking = match &t.origin {
                TicketOrigin::Appointment { booking, .. } => Some(booking),
                TicketOrigin::WalkIn { booking } => booking.as_ref(),
            };
            let desk = match &t.state {
                TicketState::Called { desk }
                | TicketState::Serving { desk }
                | TicketState::Parked { desk } => Some(desk),
                _ => None,
            };
            let service = catalog.services.get(&t.service);
            let at = since(t);
            Present {
                ticket: t.number.to_string(),
                service: t.service.to_string(),
                service_name: service.map(|s| text(&s.name)).unwrap_or_default(),
                state: t.state.name(),
                desk: desk.map(ToString::to_string),
                desk_label: desk
                    .and_then(|d| catalog.desks.get(d))
                    .map(|d| text(&d.label)),
                waiting_area: service
                    .and_then(|s| catalog.departments.get(&s.department))
                    .map(|d| text(&d.waiting_area)),
                since: at,
                since_local: catalog.calendar.local_hhmm(at),
                issued_at: t.issued_at,
                appointment: match &t.origin {
                    TicketOrigin::Appointment { slot_start, .. } => {
                        Some(catalog.calendar.local_hhmm(*slot_start))
                    }
                    TicketOrigin::WalkIn { .. } => None,
                },
                name: booking
                    .and_then(|b| personal.get(b))
                    .and_then(|p| p.name.clone()),
            }
        })
        .collect();
    people.sort_by_key(|p| p.issued_at);
    Ok(people)
}

/// The evacuation list as plain text, one person per line, by place.
pub(crate) fn evacuation(catalog: &Catalog, people: &[Present]) -> warp::reply::Response {
    use std::fmt::Write;
    let now = leitsystem_runtime::clock::Clock::now(&leitsystem_runtime::clock::SystemClock);
    let mut out = format!(
        "Evakuierungsliste / Evacuation list — {}\n{}\nPersonen im Haus / people in the building: {}\n\n",
        catalog.site_name,
        catalog.calendar.local_ddmmyyyy_hhmm(now),
        people.len()
    );
    let mut by_place: BTreeMap<String, Vec<&Present>> = BTreeMap::new();
    for p in people {
        let place = match (&p.desk_label, &p.waiting_area) {
            (Some(desk), _) => desk.de.clone(),
            (None, Some(area)) => area.de.clone(),
            (None, None) => "?".to_string(),
        };
        by_place.entry(place).or_default().push(p);
    }
    for (place, list) in by_place {
        let _ = writeln!(out, "== {place} ({})", list.len());
        for p in list {
            let _ = writeln!(
                out,
                "[ ] {:<8} {:<9} seit {}  {}{}",
                p.ticket,
                p.state,
                p.since_local,
                p.service_name.de,
                p.name
                    .as_ref()
                    .map(|n| format!("  — {n}"))
                    .unwrap_or_default()
            );
        }
        out.push('\n');
    }
    warp::reply::with_header(
        warp::reply::with_header(out, "content-type", "text/plain; charset=utf-8"),
        "cache-control",
        "no-store",
    )
    .into_response()
}

pub(crate) fn registry(registry: &DeviceRegistry) -> Vec<leitsystem_runtime::status::DeviceHealth> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .values()
        .cloned()
        .collect()
}

pub(crate) async fn devices(ctx: &Ctx) -> warp::reply::Response {
    let devices = registry(&ctx.registry);
    let Ok(view) = ctx.engine.state_view().await else {
        return unavailable();
    };
    let failed: Vec<Value> = view
        .tickets
        .iter()
        .filter(|t| !t.state.is_final())
        .filter_map(|t| match &t.print {
            PrintState::Failed {
                printer,
                reason,
                at,
            } => Some(json!({"ticket": t.number, "printer": printer, "reason": reason, "at": at})),
            _ => None,
        })
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({"devices": devices, "failed_prints": failed}),
    )
}

pub(crate) async fn stats(ctx: &Ctx) -> warp::reply::Response {
    let Ok(view) = ctx.engine.state_view().await else {
        return unavailable();
    };
    let catalog = &ctx.api.catalog;
    let mut out = Vec::new();
    for s in catalog.services.values() {
        let tickets: Vec<&Ticket> = view.tickets.iter().filter(|t| t.service == s.id).collect();
        let waits: Vec<i64> = tickets
            .iter()
            .filter_map(|t| t.called_at.map(|c| c - t.issued_at))
            .collect();
        let services: Vec<i64> = tickets
            .iter()
            .filter(|t| t.state == TicketState::Done)
            .filter_map(|t| Some(t.finished_at? - t.serving_since?))
            .collect();
        let average = |v: &[i64]| -> Option<f64> {
            (!v.is_empty()).then(|| v.iter().sum::<i64>() as f64 / v.len() as f64 / 60_000.0)
        };
        out.push(json!({
            "service": s.id,
            "name": text(&s.name),
            "issued": tickets.len(),
            "served": tickets.iter().filter(|t| t.state == TicketState::Done).count(),
            "no_shows": tickets.iter().filter(|t| t.state == TicketState::NoShow).count(),
            "waiting": view.waiting.get(s.id.as_str()).copied().unwrap_or(0),
            "average_wait_minutes": average(&waits),
            "average_service_minutes": average(&services),
        }));
    }
    json_reply(StatusCode::OK, &json!({"day": view.day, "services": out}))
}

pub(crate) async fn alarms(ctx: &Ctx) -> warp::reply::Response {
    let catalog = &ctx.api.catalog;
    let Ok(view) = ctx.engine.state_view().await else {
        return unavailable();
    };
    // Today's alarms are a view the engine keeps (cleared when the day starts), newest first.
    let list: Vec<Value> = view
        .alarms
        .iter()
        .rev()
        .map(|a| {
            json!({
                "desk": a.desk,
                "desk_label": catalog.desks.get(&a.desk).map(|d| text(&d.label)),
                "at": a.at,
                "at_local": catalog.calendar.local_hhmm(a.at),
                "source": a.source,
                "seq": a.seq,
                "acknowledged_at": a.acknowledged.as_ref().map(|k| k.at),
                "acknowledged_local": a.acknowledged.as_ref().map(|k| catalog.calendar.local_hhmm(k.at)),
                "acknowledged_by": a.acknowledged.as_ref().map(|k| k.by.as_str()),
            })
        })
        .collect();
    json_reply(StatusCode::OK, &json!({ "alarms": list }))
}
