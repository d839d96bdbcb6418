//! The JSON API under `/api/v1` behind the kiosk, clerk and admin pages (documented in
//! `daemon/edges/web/assets/openapi.json`, served at `/api/v1/openapi.json`).
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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use warp::Reply;
use warp::http::{HeaderMap, StatusCode};
use warp::hyper::body::Buf;

use crate::auth::{Auth, Role, User};
use leitsystem_runtime::catalog::Catalog;
use leitsystem_runtime::domain::{Command, DeskId};
use leitsystem_runtime::kiosk::ScanFeed;
use leitsystem_runtime::runtime::EngineHandle;
use leitsystem_runtime::status::DeviceRegistry;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../../assets/openapi.json");
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

mod refusals;
pub(crate) use refusals::execute_error;
pub use refusals::refusal_text;
mod handle;
pub use handle::handle;
mod views;
pub use views::desk_view;
pub(crate) use views::{
    alarms, devices, evacuation, kiosk_services, kiosk_ticket, presence, registry, stats,
};
mod sockets;
pub use sockets::{desk_socket, kiosk_socket, ws_authorize};

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
    kiosk_clients: Option<Vec<leitsystem_runtime::config::AddressRange>>,
    /// The catalog's hyphenation points as JSON, computed once (`GET /hyphenation`).
    hyphenation: String,
}

impl ApiState {
    /// The API's state from the catalog and `[web]`.
    pub fn new(
        catalog: Arc<Catalog>,
        web: Option<&leitsystem_runtime::config::WebConfig>,
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
        let hyphenation = serde_json::to_string(
            &leitsystem_runtime::hyphenate::HyphenationMap::for_catalog(&catalog),
        )
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
    pub display: tokio::sync::watch::Receiver<Arc<leitsystem_runtime::display::PublicDisplay>>,
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
