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

use crate::config::{SocketCaps, WebConfig};
use crate::daemon::EngineHandle;
use crate::display::PublicDisplay;
use crate::plugin_host::DeviceRegistry;

/// How often the display WebSocket sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

const DISPLAY_HTML: &str = include_str!("../web/display.html");
const DISPLAY_JS: &str = include_str!("../web/display.js");
const DISPLAY_CSS: &str = include_str!("../web/display.css");

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    engine: EngineHandle,
    registry: DeviceRegistry,
    sync: crate::sync::SyncStatus,
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
        sync: crate::sync::SyncStatus,
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
        catalog: Arc<crate::catalog::Catalog>,
        web: Option<&WebConfig>,
        scans: crate::kiosk::ScanFeed,
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
        include_str!("../web/kiosk.html"),
        "text/html; charset=utf-8",
    ),
    (
        "clerk",
        include_str!("../web/clerk.html"),
        "text/html; charset=utf-8",
    ),
    (
        "admin",
        include_str!("../web/admin.html"),
        "text/html; charset=utf-8",
    ),
];
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "pages.css",
        include_str!("../web/pages.css"),
        "text/css; charset=utf-8",
    ),
    (
        "common.js",
        include_str!("../web/common.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "kiosk.js",
        include_str!("../web/kiosk.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "clerk.js",
        include_str!("../web/clerk.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "admin.js",
        include_str!("../web/admin.js"),
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
    crate::clock::Clock::now(&crate::clock::SystemClock)
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

async fn healthz(state: WebState) -> impl warp::Reply {
    let answer = tokio::time::timeout(Duration::from_secs(2), state.engine.state_view()).await;
    match answer {
        Ok(Ok(view)) => {
            let calendar = state
                .api
                .as_ref()
                .map_or_else(crate::clock::Calendar::berlin, |api| {
                    api.catalog.calendar.clone()
                });
            // A held clock jump needs an admin, but the appliance works on: still 200. A day
            // that does not start for an unsynchronised clock serves nobody: 503.
            let (status, code) = if view.clock_wait.is_some() {
                ("clock_unsynchronised", StatusCode::SERVICE_UNAVAILABLE)
            } else if view.clock_hold.is_some() {
                ("clock_jump_held", StatusCode::OK)
            } else {
                ("ok", StatusCode::OK)
            };
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({
                    "status": status,
                    "last_seq": view.last_seq,
                    "clock": crate::clock::clock_json(
                        &calendar,
                        view.clock_hold.as_ref(),
                        view.clock_wait.as_ref(),
                    ),
                })),
                code,
            )
        }
        _ => warp::reply::with_status(
            warp::reply::json(&serde_json::json!({"status": "engine not answering"})),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    }
}

/// A Prometheus label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text format: one `family` call per metric, then its samples.
#[derive(Default)]
struct Metrics(String);

impl Metrics {
    /// Writes `# HELP` and `# TYPE` of a metric and one sample per `(labels, value)`.
    fn family<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, V)>,
    ) {
        use std::fmt::Write;
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(self.0, "{name}{labels} {value}");
        }
    }
}

async fn metrics(state: WebState) -> impl warp::Reply {
    let display = state.display.borrow().clone();
    let mut out = Metrics::default();
    let per_service = |value: fn(&crate::display::QueueInfo) -> u32| {
        display
            .queues
            .iter()
            .map(move |q| (format!("service=\"{}\"", label(&q.service)), value(q)))
            .collect::<Vec<_>>()
    };
    out.family(
        "leitsystem_waiting_tickets",
        "gauge",
        "Tickets waiting per service.",
        per_service(|q| q.waiting),
    );
    out.family(
        "leitsystem_estimated_wait_minutes",
        "gauge",
        "Estimated wait of a ticket issued now, per service.",
        per_service(|q| q.wait_minutes),
    );
    out.family(
        "leitsystem_event_log_seq",
        "counter",
        "Sequence number of the newest committed event.",
        [(String::new(), display.seq)],
    );
    out.family(
        "leitsystem_display_clients",
        "gauge",
        "Open display pages (WebSockets).",
        [(String::new(), state.clients.load(Ordering::Relaxed))],
    );
    let devices: Vec<_> = state
        .registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .values()
        .cloned()
        .collect();
    let device = |d: &crate::plugin_host::DeviceHealth| format!("device=\"{}\"", label(&d.id));
    out.family(
        "leitsystem_device_up",
        "gauge",
        "1 when the device runs (and its link is up, if it has one).",
        devices.iter().map(|d| {
            let up =
                d.state == crate::plugin_host::DeviceState::Running && d.connected != Some(false);
            (
                format!("{},role=\"{}\"", device(d), label(&d.role)),
                u8::from(up),
            )
        }),
    );
    out.family(
        "leitsystem_device_restarts_total",
        "counter",
        "Device restarts since the daemon started.",
        devices.iter().map(|d| (device(d), d.restarts)),
    );
    let printers: Vec<_> = devices.iter().filter(|d| d.role == "printer").collect();
    out.family(
        "leitsystem_printer_paper",
        "gauge",
        "Paper level of each printer (1 for the current level).",
        printers.iter().flat_map(|d| {
            ["ok", "near_end", "out"].map(|level| {
                (
                    format!("{},level=\"{level}\"", device(d)),
                    u8::from(d.paper.as_deref() == Some(level)),
                )
            })
        }),
    );
    out.family(
        "leitsystem_tickets_printed_total",
        "counter",
        "Tickets printed since the daemon started.",
        printers.iter().map(|d| (device(d), d.printed)),
    );
    out.family(
        "leitsystem_print_failures_total",
        "counter",
        "Print jobs failed since the daemon started.",
        printers.iter().map(|d| (device(d), d.print_failures)),
    );
    let sync = state.sync.snapshot();
    if sync.enabled {
        for (name, kind, help, value) in [
            (
                "leitsystem_mqtt_connected",
                "gauge",
                "1 while connected to the broker.",
                u64::from(sync.connected),
            ),
            (
                "leitsystem_mqtt_received_total",
                "counter",
                "Inbound publishes received.",
                sync.received,
            ),
            (
                "leitsystem_mqtt_bookings_applied_total",
                "counter",
                "Booking changes stored.",
                sync.bookings_applied,
            ),
            (
                "leitsystem_mqtt_bookings_ignored_total",
                "counter",
                "Booking changes older than the stored version.",
                sync.bookings_ignored,
            ),
            (
                "leitsystem_mqtt_bookings_refused_total",
                "counter",
                "Booking changes the engine refused.",
                sync.bookings_refused,
            ),
            (
                "leitsystem_mqtt_malformed_total",
                "counter",
                "Payloads rejected as malformed.",
                sync.malformed,
            ),
            (
                "leitsystem_mqtt_gaps_detected_total",
                "counter",
                "Day count/digest mismatches found.",
                sync.gaps_detected,
            ),
            (
                "leitsystem_mqtt_gaps_repaired_total",
                "counter",
                "Mismatched days that match again.",
                sync.gaps_repaired,
            ),
            (
                "leitsystem_mqtt_events_published_total",
                "counter",
                "Events the broker acknowledged.",
                sync.events_published,
            ),
            (
                "leitsystem_mqtt_outbox_backlog",
                "gauge",
                "Events not yet acknowledged by the broker.",
                sync.outbox_backlog,
            ),
        ] {
            out.family(name, kind, help, [(String::new(), value)]);
        }
    }
    warp::reply::with_header(out.0, "content-type", "text/plain; version=0.0.4")
}
