//! The JSON API under `/api/v1` behind the kiosk, clerk and admin pages (documented in
//! `daemon/web/openapi.json`, served at `/api/v1/openapi.json`).
//!
//! Every route is a row of [`ROUTES`] with its access rule; one dispatcher checks the session
//! (401 without one, 403 for the wrong role or desk), the same-origin rule for state changes
//! (an `Origin` header must match `Host`) and the body size, then runs the handler. Every input
//! becomes a [`Command`] through [`EngineHandle::execute`] with source `web:<user>` (or
//! `web:kiosk`) and the optional `Idempotency-Key` header as request id.
//!
//! Personal data (the booking's name) appears only in the admin's presence list.

// Handlers return the finished HTTP answer as their error; it is built once per request, and
// boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use warp::Reply;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::hyper::body::Buf;

use crate::auth::{Auth, LoginError, Role, User};
use crate::catalog::Catalog;
use crate::daemon::{EngineHandle, ExecuteError};
use crate::display::Bilingual;
use crate::domain::{
    Command, CommandError, CommandRequest, DeskId, DeskMode, ForwardTarget, Outcome, PrintState,
    ServiceId, Ticket, TicketNumber, TicketOrigin, TicketState,
};
use crate::kiosk::ScanFeed;
use crate::plugin_host::DeviceRegistry;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../web/openapi.json");
/// Largest request body.
pub const MAX_BODY: usize = 16 * 1024;
/// Heartbeat of the clerk and kiosk WebSockets.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anybody (display, login, the API document).
    Public,
    /// Anybody at an address of `[web] kiosk_clients` (anybody when the list is absent).
    Kiosk,
    /// A logged-in user of any role.
    User,
    /// A clerk of the `{desk}` in the path, or an admin.
    Desk,
    /// Admins.
    Admin,
}

/// One API route: method, path under `/api/v1` with `{param}` segments, access.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path below `/api/v1`, e.g. `/desks/{desk}`.
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

/// Every route of the API (the OpenAPI document must list each; a test checks).
pub const ROUTES: &[Route] = &[
    route("GET", "/openapi.json", Access::Public),
    route("GET", "/display", Access::Public),
    route("GET", "/hyphenation", Access::Public),
    route("POST", "/login", Access::Public),
    route("POST", "/logout", Access::User),
    route("GET", "/session", Access::User),
    route("GET", "/desks/{desk}", Access::Desk),
    route("GET", "/desks/{desk}/ws", Access::Desk),
    route("POST", "/desks/{desk}/forward", Access::Desk),
    route("POST", "/desks/{desk}/alarm", Access::Desk),
    route("POST", "/desks/{desk}/resume", Access::Desk),
    route("POST", "/desks/{desk}/{action}", Access::Desk),
    route("GET", "/kiosk/services", Access::Kiosk),
    route("POST", "/kiosk/tickets", Access::Kiosk),
    route("GET", "/kiosk/ws", Access::Kiosk),
    route("GET", "/presence", Access::Admin),
    route("GET", "/presence/evacuation", Access::Admin),
    route("GET", "/devices", Access::Admin),
    route("POST", "/tickets/{number}/reprint", Access::Admin),
    route("GET", "/stats", Access::Admin),
    route("GET", "/plugins", Access::Admin),
    route("GET", "/alarms", Access::Admin),
    route("POST", "/alarms/{seq}/acknowledge", Access::Admin),
    route("GET", "/clock", Access::Admin),
    route("POST", "/clock/confirm", Access::Admin),
];

/// The desk actions of `POST /desks/{desk}/{action}`.
pub const DESK_ACTIONS: &[&str] = &[
    "next", "recall", "start", "finish", "no_show", "park", "open", "pause", "close",
];

fn desk_command(action: &str, desk: DeskId) -> Option<Command> {
    Some(match action {
        "next" => Command::CallNext { desk },
        "recall" => Command::Recall { desk },
        "start" => Command::StartService { desk },
        "finish" => Command::Finish { desk },
        "no_show" => Command::NoShow { desk },
        "park" => Command::Park { desk },
        "open" => Command::OpenDesk { desk },
        "pause" => Command::PauseDesk { desk },
        "close" => Command::CloseDesk { desk },
        _ => return None,
    })
}

/// Finds the route for a method and path (segments below `/api/v1`) and its parameters.
pub fn find_route<'a>(method: &str, segments: &[&'a str]) -> Option<(Route, Vec<&'a str>)> {
    let mut path_matched = false;
    for r in ROUTES {
        let pattern: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        if pattern.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let matches = pattern.iter().zip(segments).all(|(p, s)| {
            if p.starts_with('{') {
                params.push(*s);
                !s.is_empty()
            } else {
                p == s
            }
        });
        if matches {
            path_matched = true;
            if r.method == method {
                return Some((*r, params));
            }
        }
    }
    let _ = path_matched;
    None
}

/// Kiosk walk-ins per client address and minute.
#[derive(Debug, Default)]
struct RateLimiter {
    windows: HashMap<IpAddr, (Instant, u32)>,
}

impl RateLimiter {
    fn allow(&mut self, ip: IpAddr, per_minute: u32) -> Result<(), Duration> {
        let now = Instant::now();
        if self.windows.len() > 10_000 {
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let entry = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        if entry.1 >= per_minute {
            return Err(Duration::from_secs(60).saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }
}

/// What the API needs beyond the display's state.
pub struct ApiState {
    /// The site's master data.
    pub catalog: Arc<Catalog>,
    /// Users and sessions.
    pub auth: Arc<Auth>,
    /// Scan results for the kiosk.
    pub scans: ScanFeed,
    kiosk_per_minute: u32,
    kiosk_limiter: Mutex<RateLimiter>,
    kiosk_clients: Option<Vec<crate::config::AddressRange>>,
    /// The catalog's hyphenation points as JSON, computed once (`GET /hyphenation`).
    hyphenation: String,
}

impl ApiState {
    /// The API's state from the catalog and `[web]`.
    pub fn new(
        catalog: Arc<Catalog>,
        web: Option<&crate::config::WebConfig>,
        scans: ScanFeed,
        data_dir: Option<&std::path::Path>,
    ) -> ApiState {
        let (users, idle, rate, kiosk_clients) = match web {
            Some(w) => (
                w.users(),
                w.session_idle(),
                u32::try_from(*w.kiosk_tickets_per_minute.get_ref()).unwrap_or(10),
                w.kiosk_clients(),
            ),
            None => (Vec::new(), Duration::from_secs(12 * 3600), 10, None),
        };
        let hyphenation =
            serde_json::to_string(&crate::hyphenate::HyphenationMap::for_catalog(&catalog))
                .unwrap_or_else(|_| "{}".to_string());
        ApiState {
            hyphenation,
            catalog,
            auth: Arc::new(match data_dir {
                Some(dir) => Auth::new(users, idle).keep_sessions_in(dir),
                None => Auth::new(users, idle),
            }),
            scans,
            kiosk_per_minute: rate,
            kiosk_limiter: Mutex::new(RateLimiter::default()),
            kiosk_clients,
        }
    }
}

/// Everything a handler gets.
pub struct Ctx {
    /// The engine.
    pub engine: EngineHandle,
    /// Device health.
    pub registry: DeviceRegistry,
    /// The API's state.
    pub api: Arc<ApiState>,
    /// The public display (for `/display`).
    pub display: tokio::sync::watch::Receiver<Arc<crate::display::PublicDisplay>>,
}

/// A JSON answer that is never cached.
pub fn json_reply(status: StatusCode, value: &Value) -> warp::reply::Response {
    let reply = warp::reply::with_status(warp::reply::json(value), status);
    warp::reply::with_header(reply, "cache-control", "no-store").into_response()
}

/// A JSON error: `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> warp::reply::Response {
    json_reply(status, &json!({"error": code, "message": message.into()}))
}

fn too_many(code: &str, wait: Duration, message: &str) -> warp::reply::Response {
    let secs = wait.as_secs().max(1);
    let reply = error(StatusCode::TOO_MANY_REQUESTS, code, message);
    warp::reply::with_header(reply, "retry-after", secs.to_string()).into_response()
}

fn execute_error(e: &ExecuteError, catalog: &Catalog) -> warp::reply::Response {
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

fn unavailable() -> warp::reply::Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "engine_unavailable",
        "the engine does not answer",
    )
}

/// The session user from the request's cookie.
pub fn session_user(api: &ApiState, headers: &HeaderMap) -> Option<(String, Arc<User>)> {
    headers
        .get_all(warp::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(crate::auth::token_from_cookies)
        .and_then(|token| api.auth.session(token).map(|u| (token.to_string(), u)))
}

/// A state-changing request from another origin (CSRF): its `Origin` does not match `Host`.
pub fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(warp::http::header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(warp::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority != Some(host) || host.is_empty()
}

/// Checks the session and role for a route: the user (None for public routes) or the answer.
pub fn authorize(
    api: &ApiState,
    route: &Route,
    params: &[&str],
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Option<(String, Arc<User>)>, warp::reply::Response> {
    if route.access == Access::Kiosk {
        if let Some(allowed) = &api.kiosk_clients {
            if !client.is_some_and(|ip| allowed.iter().any(|range| range.contains(ip))) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "not_a_kiosk",
                    "this computer is not a kiosk of this site ([web] kiosk_clients)",
                ));
            }
        }
        return Ok(session_user(api, headers));
    }
    if route.access == Access::Public {
        return Ok(session_user(api, headers));
    }
    let Some((token, user)) = session_user(api, headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first",
        ));
    };
    let allowed = match route.access {
        Access::Public | Access::Kiosk | Access::User => true,
        Access::Admin => user.role == Role::Admin,
        Access::Desk => params.first().is_some_and(|d| user.may_use_desk(d)),
    };
    if !allowed {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may not do this", user.name),
        ));
    }
    Ok(Some((token, user)))
}

async fn read_body(
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
) -> Result<Vec<u8>, warp::reply::Response> {
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|_| error(StatusCode::BAD_REQUEST, "bad_body", "unreadable body"))?;
        if out.len() + chunk.remaining() > MAX_BODY {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("bodies are limited to {MAX_BODY} bytes"),
            ));
        }
        out.extend_from_slice(chunk.chunk());
    }
    Ok(out)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, warp::reply::Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
}

/// The `/api/v1/...` dispatcher (all routes but the WebSocket upgrades).
pub async fn handle(
    tail: String,
    method: Method,
    headers: HeaderMap,
    remote: Option<SocketAddr>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>>,
    ctx: Ctx,
) -> warp::reply::Response {
    let segments: Vec<&str> = tail.trim_end_matches('/').split('/').collect();
    let Some((route, params)) = find_route(method.as_str(), &segments) else {
        let known_path = ROUTES.iter().any(|r| {
            find_route(r.method, &segments).is_some_and(|(found, _)| found.path == r.path)
        });
        return if known_path {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        } else {
            error(StatusCode::NOT_FOUND, "not_found", "no such API route")
        };
    };
    let user = match authorize(&ctx.api, &route, &params, &headers, remote.map(|a| a.ip())) {
        Ok(user) => user,
        Err(answer) => return answer,
    };
    if method == Method::POST && cross_origin(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "the request comes from another origin",
        );
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let source = user.as_ref().map_or_else(
        || "web:kiosk".to_string(),
        |(_, u)| format!("web:{}", u.name),
    );
    let request_id = idempotency_key(&headers);
    let ip = remote.map(|a| a.ip());
    match route.path {
        "/openapi.json" => warp::reply::with_header(
            warp::reply::with_header(OPENAPI, "content-type", "application/json"),
            "cache-control",
            "no-store",
        )
        .into_response(),
        "/display" => {
            let display = ctx.display.borrow().clone();
            warp::reply::json(&*display).into_response()
        }
        // Changes only with the config, and a page fetches it once when it loads.
        "/hyphenation" => warp::reply::with_header(
            warp::reply::with_header(
                ctx.api.hyphenation.clone(),
                "content-type",
                "application/json",
            ),
            "cache-control",
            "no-store",
        )
        .into_response(),
        "/login" => login(&ctx, &body, ip).await,
        "/logout" => {
            if let Some((token, _)) = &user {
                ctx.api.auth.logout(token).await;
            }
            let reply = json_reply(StatusCode::OK, &json!({"ok": true}));
            warp::reply::with_header(
                reply,
                "set-cookie",
                format!(
                    "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                    crate::auth::COOKIE
                ),
            )
            .into_response()
        }
        "/session" => match &user {
            Some((_, u)) => json_reply(StatusCode::OK, &user_json(u)),
            None => error(StatusCode::UNAUTHORIZED, "unauthorized", "log in first"),
        },
        "/desks/{desk}" => match desk_view(&ctx, params[0]).await {
            Ok(view) => json_reply(StatusCode::OK, &view),
            Err(answer) => answer,
        },
        "/desks/{desk}/ws" => error(
            StatusCode::BAD_REQUEST,
            "websocket_expected",
            "this is a WebSocket endpoint",
        ),
        "/desks/{desk}/forward" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Forward {
                service: Option<String>,
                desk: Option<String>,
            }
            let forward: Forward = match parse(&body) {
                Ok(f) => f,
                Err(answer) => return answer,
            };
            let target = match (forward.service, forward.desk) {
                (Some(s), None) => ForwardTarget::Service(ServiceId::new(s)),
                (None, Some(d)) => ForwardTarget::Desk(DeskId::new(d)),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "give either service or desk",
                    );
                }
            };
            let command = Command::Forward {
                desk: DeskId::new(params[0]),
                target,
            };
            run(&ctx, source, request_id, command).await
        }
        "/desks/{desk}/resume" => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Resume {
                ticket: Option<String>,
            }
            let resume: Resume = if body.iter().all(u8::is_ascii_whitespace) {
                Resume::default()
            } else {
                match parse(&body) {
                    Ok(r) => r,
                    Err(answer) => return answer,
                }
            };
            let command = Command::ResumeAtDesk {
                desk: DeskId::new(params[0]),
                ticket: resume.ticket.map(TicketNumber::new),
            };
            run(&ctx, source, request_id, command).await
        }
        "/desks/{desk}/alarm" => {
            let command = Command::SilentAlarm {
                desk: DeskId::new(params[0]),
            };
            run(&ctx, source, request_id, command).await
        }
        "/desks/{desk}/{action}" => match desk_command(params[1], DeskId::new(params[0])) {
            Some(command) => run(&ctx, source, request_id, command).await,
            None => error(
                StatusCode::NOT_FOUND,
                "unknown_action",
                format!("actions are {}", DESK_ACTIONS.join(", ")),
            ),
        },
        "/kiosk/services" => kiosk_services(&ctx).await,
        "/kiosk/tickets" => kiosk_ticket(&ctx, &body, ip, request_id).await,
        "/kiosk/ws" => error(
            StatusCode::BAD_REQUEST,
            "websocket_expected",
            "this is a WebSocket endpoint",
        ),
        "/presence" => match presence(&ctx).await {
            Ok(list) => {
                let catalog = &ctx.api.catalog;
                let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                json_reply(
                    StatusCode::OK,
                    &json!({
                        "site": catalog.site_name,
                        "town": catalog.town,
                        "at": now,
                        "at_local": catalog.calendar.local_ddmmyyyy_hhmm(now),
                        "people": list,
                    }),
                )
            }
            Err(answer) => answer,
        },
        "/presence/evacuation" => match presence(&ctx).await {
            Ok(list) => evacuation(&ctx.api.catalog, &list),
            Err(answer) => answer,
        },
        "/devices" => devices(&ctx).await,
        "/tickets/{number}/reprint" => {
            let command = Command::Reprint {
                ticket: TicketNumber::new(params[0]),
            };
            run(&ctx, source, request_id, command).await
        }
        "/alarms/{seq}/acknowledge" => match params[0].parse::<u64>() {
            Ok(alarm) => {
                run(
                    &ctx,
                    source,
                    request_id,
                    Command::AcknowledgeAlarm { alarm },
                )
                .await
            }
            Err(_) => error(
                StatusCode::BAD_REQUEST,
                "invalid_alarm",
                format!("'{}' is not an alarm's seq (a number)", params[0]),
            ),
        },
        "/stats" => stats(&ctx).await,
        "/plugins" => {
            let devices = registry(&ctx.registry);
            let plugins: Vec<Value> = devices
                .iter()
                .map(|d| {
                    json!({"device": d.id, "role": d.role, "plugin": d.plugin,
                           "plugin_file": d.plugin_file, "state": d.state})
                })
                .collect();
            json_reply(StatusCode::OK, &json!({ "plugins": plugins }))
        }
        "/alarms" => alarms(&ctx).await,
        "/clock" => match ctx.engine.state_view().await {
            Ok(view) => json_reply(
                StatusCode::OK,
                &crate::clock::clock_json(
                    &ctx.api.catalog.calendar,
                    view.clock_hold.as_ref(),
                    view.clock_wait.as_ref(),
                ),
            ),
            Err(_) => unavailable(),
        },
        "/clock/confirm" => run(&ctx, source, request_id, Command::ConfirmClock).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such API route"),
    }
}

fn user_json(user: &User) -> Value {
    json!({"name": user.name, "role": user.role, "desks": user.desks})
}

async fn login(ctx: &Ctx, body: &[u8], ip: Option<IpAddr>) -> warp::reply::Response {
    #[derive(Deserialize)]
    struct Login {
        name: String,
        password: String,
    }
    let input: Login = match parse(body) {
        Ok(l) => l,
        Err(answer) => return answer,
    };
    if input.name.len() > 256 || input.password.len() > 1024 {
        return error(StatusCode::BAD_REQUEST, "bad_request", "too long");
    }
    match ctx.api.auth.login(&input.name, &input.password, ip).await {
        Ok((token, user)) => {
            let reply = json_reply(StatusCode::OK, &user_json(&user));
            warp::reply::with_header(
                reply,
                "set-cookie",
                format!(
                    "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                    crate::auth::COOKIE,
                    ctx.api.auth.idle().as_secs()
                ),
            )
            .into_response()
        }
        Err(LoginError::Invalid) => error(
            StatusCode::UNAUTHORIZED,
            "invalid_login",
            "wrong name or password",
        ),
        Err(LoginError::Locked(wait)) => too_many(
            "locked",
            wait,
            "too many failed logins from this computer; try again later",
        ),
        Err(LoginError::Busy) => too_many(
            "busy",
            Duration::from_secs(1),
            "too many logins at once; try again in a moment",
        ),
    }
}

async fn run(
    ctx: &Ctx,
    source: String,
    request_id: Option<String>,
    command: Command,
) -> warp::reply::Response {
    let request = CommandRequest {
        request_id,
        source,
        command,
    };
    match ctx.engine.execute(request).await {
        Ok(executed) => json_reply(
            StatusCode::OK,
            &json!({"outcome": executed.outcome, "duplicate": executed.duplicate}),
        ),
        Err(e) => execute_error(&e, &ctx.api.catalog),
    }
}

fn text(t: &crate::config::Text) -> Bilingual {
    t.into()
}

/// One service's waiting line.
#[derive(Debug, Serialize)]
struct Line {
    service: String,
    name: Bilingual,
    prefix: String,
    department: String,
    waiting: u32,
    wait_minutes: u32,
}

async fn lines(ctx: &Ctx, only: Option<&[ServiceId]>) -> Result<Vec<Line>, warp::reply::Response> {
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

async fn kiosk_services(ctx: &Ctx) -> warp::reply::Response {
    match lines(ctx, None).await {
        Ok(lines) => json_reply(
            StatusCode::OK,
            &json!({"site": ctx.api.catalog.site_name, "services": lines}),
        ),
        Err(answer) => answer,
    }
}

async fn kiosk_ticket(
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
            priority: crate::domain::PRIORITY_NORMAL,
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

fn since(t: &Ticket) -> i64 {
    match t.state {
        TicketState::Serving { .. } => t.serving_since.unwrap_or(t.queued_at),
        TicketState::Called { .. } => t.called_at.unwrap_or(t.queued_at),
        _ => t.queued_at,
    }
}

/// One person in the building.
#[derive(Debug, Serialize)]
struct Present {
    ticket: String,
    service: String,
    service_name: Bilingual,
    state: &'static str,
    desk: Option<String>,
    desk_label: Option<Bilingual>,
    waiting_area: Option<Bilingual>,
    since: i64,
    since_local: String,
    issued_at: i64,
    appointment: Option<String>,
    name: Option<String>,
}

async fn presence(ctx: &Ctx) -> Result<Vec<Present>, warp::reply::Response> {
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
fn evacuation(catalog: &Catalog, people: &[Present]) -> warp::reply::Response {
    use std::fmt::Write;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
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

fn registry(registry: &DeviceRegistry) -> Vec<crate::plugin_host::DeviceHealth> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .values()
        .cloned()
        .collect()
}

async fn devices(ctx: &Ctx) -> warp::reply::Response {
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

async fn stats(ctx: &Ctx) -> warp::reply::Response {
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

async fn alarms(ctx: &Ctx) -> warp::reply::Response {
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

/// Answer of a WebSocket route before the upgrade: the session token (if any), or the refusal.
pub fn ws_authorize(
    api: &ApiState,
    path: &str,
    params: &[&str],
    headers: &HeaderMap,
    client: Option<IpAddr>,
) -> Result<Option<String>, warp::reply::Response> {
    let Some((route, _)) = ROUTES.iter().find(|r| r.path == path).map(|r| (*r, ())) else {
        return Err(error(StatusCode::NOT_FOUND, "not_found", "no such route"));
    };
    if cross_origin(headers) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "the request comes from another origin",
        ));
    }
    authorize(api, &route, params, headers, client).map(|user| user.map(|(token, _)| token))
}

/// The clerk page's WebSocket: the desk view now and after every committed change.
/// Ends when the page goes away, a send fails, the daemon stops, or the session ends (logout
/// or idle timeout: checked before every push and heartbeat, and at once on a logout).
pub async fn desk_socket(
    socket: warp::ws::WebSocket,
    ctx: Ctx,
    desk: String,
    token: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut committed = ctx.engine.subscribe();
    let mut logouts = ctx.api.auth.logouts();
    let (mut tx, mut rx) = socket.split();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut send_view = true;
    loop {
        if !ctx.api.auth.is_live(&token) {
            let close = warp::ws::Message::close_with(4401_u16, "session ended");
            let _ = tx.send(close).await;
            break;
        }
        if send_view {
            let message = match desk_view(&ctx, &desk).await {
                Ok(view) => json!({"type": "desk", "desk": view}),
                Err(_) => json!({"type": "error"}),
            };
            // A logout while the view was being read: the view is not sent.
            if !ctx.api.auth.is_live(&token) {
                continue;
            }
            if tx
                .send(warp::ws::Message::text(message.to_string()))
                .await
                .is_err()
            {
                break;
            }
        }
        send_view = false;
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.send(warp::ws::Message::close()).await;
                break;
            }
            _ = logouts.changed() => {}
            record = committed.recv() => {
                match record {
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    _ => send_view = true,
                }
                // Fold a burst into one view.
                while committed.try_recv().is_ok() {}
            }
            _ = heartbeat.tick() => {
                let text = json!({"type": "heartbeat"}).to_string();
                if tx.send(warp::ws::Message::text(text)).await.is_err() {
                    break;
                }
            }
            incoming = rx.next() => match incoming {
                Some(Ok(message)) if message.is_close() => break,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
}

/// The kiosk page's WebSocket: every scan result, plus heartbeats.
pub async fn kiosk_socket(
    socket: warp::ws::WebSocket,
    scans: ScanFeed,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut results = scans.subscribe();
    let (mut tx, mut rx) = socket.split();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let text = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.send(warp::ws::Message::close()).await;
                break;
            }
            result = results.recv() => match result {
                Ok(scan) => json!({"type": "scan", "scan": scan}).to_string(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = heartbeat.tick() => json!({"type": "heartbeat"}).to_string(),
            incoming = rx.next() => match incoming {
                Some(Ok(message)) if message.is_close() => break,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            },
        };
        if tx.send(warp::ws::Message::text(text)).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap_or(Value::Null);
        assert_eq!(doc["openapi"], "3.1.0");
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.to_lowercase()];
            assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
            let public = op["security"] == json!([]);
            assert_eq!(
                public,
                matches!(r.access, Access::Public | Access::Kiosk),
                "{} {}",
                r.method,
                r.path
            );
        }
        let documented = doc["paths"].as_object().map_or(0, |p| {
            p.values()
                .map(|ops| ops.as_object().map_or(0, |o| o.len()))
                .sum::<usize>()
        });
        assert_eq!(
            documented,
            ROUTES.len(),
            "the document lists routes that do not exist"
        );
    }

    #[test]
    fn routes_match_with_parameters() {
        let found = find_route("POST", &["desks", "3", "next"]);
        assert!(
            matches!(found, Some((r, p)) if r.path == "/desks/{desk}/{action}" && p == ["3", "next"])
        );
        let found = find_route("POST", &["desks", "3", "alarm"]);
        assert!(matches!(found, Some((r, _)) if r.path == "/desks/{desk}/alarm"));
        assert!(find_route("GET", &["nope"]).is_none());
    }
}
