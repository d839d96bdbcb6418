//! The web server (warp): the public wall display, the JSON API behind it, health and metrics.
//!
//! - `GET /display` — the wall display page (assets embedded in the binary): latest calls with
//!   the newest highlighted, a gong on every call and recall, waiting counts and estimated
//!   waits, a clock, German and English; `?department=<id>` shows one department.
//! - `GET /display/ws` — the page's WebSocket: the [`PublicDisplay`] on connect and on every
//!   change (pushed, never polled), and a heartbeat every [`HEARTBEAT`] so the page can tell a
//!   dead connection and reconnect.
//! - `GET /api/v1/display` — the same state as JSON.
//! - `GET /healthz` — 200 when the engine answers, else 503.
//! - `GET /metrics` — Prometheus text format: waiting lines, waits, devices, printers.
//!
//! Nothing here writes: every change goes through the engine like any other input.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use leitsystem_runtime::config::{SocketCaps, WebConfig};
use leitsystem_runtime::display::PublicDisplay;
use leitsystem_runtime::runtime::EngineHandle;
use leitsystem_runtime::status::DeviceRegistry;

mod health;
pub(crate) use health::{healthz, metrics};

/// How often the display WebSocket sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

const DISPLAY_HTML: &str = include_str!("../../assets/display.html");
const DISPLAY_JS: &str = include_str!("../../assets/display.js");
const DISPLAY_CSS: &str = include_str!("../../assets/display.css");

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    engine: EngineHandle,
    registry: DeviceRegistry,
    sync: leitsystem_runtime::status::SyncStatus,
    display: watch::Receiver<Arc<PublicDisplay>>,
    clients: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    api: Option<Arc<crate::api::ApiState>>,
    slots: SocketSlots,
}

/// Free places for WebSockets, per kind (a permit lives as long as its socket).
#[derive(Clone)]
struct SocketSlots {
    display: Arc<tokio::sync::Semaphore>,
    console: Arc<tokio::sync::Semaphore>,
    kiosk: Arc<tokio::sync::Semaphore>,
}

impl SocketSlots {
    fn new(caps: SocketCaps) -> SocketSlots {
        SocketSlots {
            display: Arc::new(tokio::sync::Semaphore::new(caps.display)),
            console: Arc::new(tokio::sync::Semaphore::new(caps.console)),
            kiosk: Arc::new(tokio::sync::Semaphore::new(caps.kiosk)),
        }
    }
}

/// A place for one more socket of a kind, or the 503 that refuses it.
#[allow(clippy::result_large_err)] // the refusal is the reply itself, built once per refusal
fn socket_slot(
    slots: &Arc<tokio::sync::Semaphore>,
    kind: &str,
) -> Result<tokio::sync::OwnedSemaphorePermit, warp::reply::Response> {
    slots.clone().try_acquire_owned().map_err(|_| {
        tracing::warn!(
            kind,
            "WebSocket refused: the cap of open {kind} sockets is reached"
        );
        let reply = crate::api::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sockets",
            format!("too many open {kind} connections; try again later"),
        );
        warp::reply::with_header(reply, "retry-after", "10").into_response()
    })
}

impl WebState {
    /// The shared state of the handlers.
    pub fn new(
        engine: EngineHandle,
        registry: DeviceRegistry,
        sync: leitsystem_runtime::status::SyncStatus,
        display: watch::Receiver<Arc<PublicDisplay>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            engine,
            registry,
            sync,
            display,
            clients: Arc::new(AtomicUsize::new(0)),
            shutdown,
            api: None,
            slots: SocketSlots::new(SocketCaps::default()),
        }
    }

    /// Adds what the `/api/v1` routes and the kiosk, clerk and admin pages need; without it
    /// they answer 503. With a data directory, logins survive a restart.
    pub fn with_api(
        mut self,
        catalog: Arc<leitsystem_runtime::catalog::Catalog>,
        web: Option<&WebConfig>,
        scans: leitsystem_runtime::kiosk::ScanFeed,
        data_dir: Option<&std::path::Path>,
    ) -> Self {
        self.api = Some(Arc::new(crate::api::ApiState::new(
            catalog, web, scans, data_dir,
        )));
        if let Some(web) = web {
            self.slots = SocketSlots::new(web.socket_caps());
        }
        self
    }

    fn ctx(&self) -> Option<crate::api::Ctx> {
        Some(crate::api::Ctx {
            engine: self.engine.clone(),
            registry: self.registry.clone(),
            api: self.api.clone()?,
            display: self.display.clone(),
        })
    }
}

/// The pages and their assets (embedded): path below `/` or `/assets/`, body, content type.
const PAGES: &[(&str, &str, &str)] = &[
    (
        "kiosk",
        include_str!("../../assets/kiosk.html"),
        "text/html; charset=utf-8",
    ),
    (
        "clerk",
        include_str!("../../assets/clerk.html"),
        "text/html; charset=utf-8",
    ),
    (
        "admin",
        include_str!("../../assets/admin.html"),
        "text/html; charset=utf-8",
    ),
];
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "pages.css",
        include_str!("../../assets/pages.css"),
        "text/css; charset=utf-8",
    ),
    (
        "common.js",
        include_str!("../../assets/common.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "kiosk.js",
        include_str!("../../assets/kiosk.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "clerk.js",
        include_str!("../../assets/clerk.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "admin.js",
        include_str!("../../assets/admin.js"),
        "text/javascript; charset=utf-8",
    ),
];

fn lookup(
    table: &'static [(&str, &str, &str)],
    name: &str,
) -> Option<(&'static str, &'static str)> {
    table
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, body, kind)| (*body, *kind))
}

fn no_api() -> warp::reply::Response {
    crate::api::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_api",
        "the API is not configured",
    )
}

fn with_state(state: WebState) -> impl Filter<Extract = (WebState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Security headers of every page: no framing, no sniffing, scripts and connections only from
/// this origin (the pages never insert data as HTML, and this is the second line of defence).
fn secured(reply: impl warp::Reply) -> impl warp::Reply {
    let reply = warp::reply::with_header(
        reply,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; frame-ancestors 'none'",
    );
    let reply = warp::reply::with_header(reply, "x-content-type-options", "nosniff");
    warp::reply::with_header(reply, "referrer-policy", "no-referrer")
}

fn asset(body: &'static str, content_type: &'static str) -> impl warp::Reply {
    secured(warp::reply::with_header(body, "content-type", content_type))
}

/// All routes.
pub fn routes(
    state: WebState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let root = warp::path::end()
        .and(warp::get())
        .map(|| warp::redirect::see_other(warp::http::Uri::from_static("/display")));
    let display_page = warp::path!("display")
        .and(warp::get())
        .map(|| asset(DISPLAY_HTML, "text/html; charset=utf-8"));
    let display_js = warp::path!("assets" / "display.js")
        .and(warp::get())
        .map(|| asset(DISPLAY_JS, "text/javascript; charset=utf-8"));
    let display_css = warp::path!("assets" / "display.css")
        .and(warp::get())
        .map(|| asset(DISPLAY_CSS, "text/css; charset=utf-8"));
    let display_ws = warp::path!("display" / "ws")
        .and(warp::ws())
        .and(with_state(state.clone()))
        .map(|ws: warp::ws::Ws, state: WebState| {
            let slot = match socket_slot(&state.slots.display, "display") {
                Ok(slot) => slot,
                Err(refused) => return refused,
            };
            ws.max_message_size(4096)
                .on_upgrade(move |socket| async move {
                    display_socket(socket, state).await;
                    drop(slot);
                })
                .into_response()
        });
    let api_display = warp::path!("api" / "v1" / "display")
        .and(warp::get())
        .and(with_state(state.clone()))
        .map(|state: WebState| {
            let display = state.display.borrow().clone();
            warp::reply::json(&*display)
        });
    let pages = warp::path!(String)
        .and(warp::get())
        .and_then(|name: String| async move {
            lookup(PAGES, &name)
                .map(|(body, kind)| asset(body, kind))
                .ok_or_else(warp::reject::not_found)
        });
    let assets =
        warp::path!("assets" / String)
            .and(warp::get())
            .and_then(|name: String| async move {
                lookup(ASSETS, &name)
                    .map(|(body, kind)| asset(body, kind))
                    .ok_or_else(warp::reject::not_found)
            });
    let desk_ws = warp::path!("api" / "v1" / "desks" / String / "ws")
        .and(warp::ws())
        .and(warp::header::headers_cloned())
        .and(with_state(state.clone()))
        .map(
            |desk: String, ws: warp::ws::Ws, headers: warp::http::HeaderMap, state: WebState| {
                let Some(ctx) = state.ctx() else {
                    return no_api();
                };
                let token = match crate::api::ws_authorize(
                    &ctx.api,
                    "/desks/{desk}/ws",
                    &[&desk],
                    &headers,
                    None,
                ) {
                    Ok(Some(token)) => token,
                    Ok(None) => return no_api(),
                    Err(answer) => return answer,
                };
                let slot = match socket_slot(&state.slots.console, "console") {
                    Ok(slot) => slot,
                    Err(refused) => return refused,
                };
                let shutdown = state.shutdown.clone();
                ws.max_message_size(4096)
                    .on_upgrade(move |socket| async move {
                        crate::api::desk_socket(socket, ctx, desk, token, shutdown).await;
                        drop(slot);
                    })
                    .into_response()
            },
        );
    let kiosk_ws = warp::path!("api" / "v1" / "kiosk" / "ws")
        .and(warp::ws())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(with_state(state.clone()))
        .map(
            |ws: warp::ws::Ws,
             headers: warp::http::HeaderMap,
             remote: Option<SocketAddr>,
             state: WebState| {
                let Some(ctx) = state.ctx() else {
                    return no_api();
                };
                let client = remote.map(|r| r.ip());
                if let Err(answer) =
                    crate::api::ws_authorize(&ctx.api, "/kiosk/ws", &[], &headers, client)
                {
                    return answer;
                }
                let slot = match socket_slot(&state.slots.kiosk, "kiosk") {
                    Ok(slot) => slot,
                    Err(refused) => return refused,
                };
                let (scans, shutdown) = (ctx.api.scans.clone(), state.shutdown.clone());
                ws.max_message_size(4096)
                    .on_upgrade(move |socket| async move {
                        crate::api::kiosk_socket(socket, scans, shutdown).await;
                        drop(slot);
                    })
                    .into_response()
            },
        );
    let api = warp::path("api")
        .and(warp::path("v1"))
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .then(
            |tail: warp::path::Tail,
             method: warp::http::Method,
             headers: warp::http::HeaderMap,
             remote: Option<SocketAddr>,
             body,
             state: WebState| async move {
                match state.ctx() {
                    Some(ctx) => {
                        let reply = crate::api::handle(
                            tail.as_str().to_string(),
                            method,
                            headers,
                            remote,
                            body,
                            ctx,
                        )
                        .await;
                        secured(reply).into_response()
                    }
                    None => no_api(),
                }
            },
        );
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(healthz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .then(metrics);
    root.map(secured)
        .or(display_page)
        .or(display_js)
        .or(display_css)
        .or(display_ws)
        .or(api_display)
        .or(healthz)
        .or(metrics)
        .or(desk_ws)
        .or(kiosk_ws)
        .or(api)
        .or(assets)
        .or(pages)
}

/// Serves until `shutdown`; open WebSockets are closed then too.
pub async fn serve(listener: tokio::net::TcpListener, state: WebState) {
    let shutdown = state.shutdown.clone();
    warp::serve(routes(state))
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await })
        .run()
        .await;
}

#[derive(serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DisplayMessage<'a> {
    /// The display's state and the appliance's clock (Unix ms) when it was sent.
    State {
        state: &'a PublicDisplay,
        at: i64,
    },
    Heartbeat {
        at: i64,
    },
}

fn now_millis() -> i64 {
    leitsystem_runtime::clock::Clock::now(&leitsystem_runtime::clock::SystemClock)
}

/// One display page: the state now, then every change, plus heartbeats; ends when the page
/// goes away, a send fails or the daemon stops.
async fn display_socket(socket: warp::ws::WebSocket, state: WebState) {
    let WebState {
        mut display,
        clients,
        shutdown,
        ..
    } = state;
    clients.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = socket.split();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut send_state = true;
    loop {
        if send_state {
            let current = display.borrow_and_update().clone();
            let text = serde_json::to_string(&DisplayMessage::State {
                state: &current,
                at: now_millis(),
            })
            .unwrap_or_default();
            if tx.send(warp::ws::Message::text(text)).await.is_err() {
                break;
            }
        }
        send_state = false;
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.send(warp::ws::Message::close()).await;
                break;
            }
            changed = display.changed() => {
                if changed.is_err() { break; }
                send_state = true;
            }
            _ = heartbeat.tick() => {
                let text = serde_json::to_string(&DisplayMessage::Heartbeat { at: now_millis() })
                    .unwrap_or_default();
                if tx.send(warp::ws::Message::text(text)).await.is_err() {
                    break;
                }
            }
            incoming = rx.next() => match incoming {
                // The page sends nothing but pongs and the close; anything ends nothing.
                Some(Ok(message)) if message.is_close() => break,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    clients.fetch_sub(1, Ordering::Relaxed);
}
