//! `/healthz` (the appliance's health for a monitor) and `/metrics` (Prometheus text: queue,
//! devices, sync, sockets), both read from the engine's state and the status boards.

use super::WebState;
use std::sync::atomic::Ordering;
use std::time::Duration;
use warp::http::StatusCode;

pub(crate) async fn healthz(state: WebState) -> impl warp::Reply {
    let answer = tokio::time::timeout(Duration::from_secs(2), state.engine.state_view()).await;
    match answer {
        Ok(Ok(view)) => {
            let calendar = state
                .api
                .as_ref()
                .map_or_else(leitsystem_runtime::clock::Calendar::berlin, |api| {
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
                    "clock": leitsystem_runtime::clock::clock_json(
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
pub(crate) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text format: one `family` call per metric, then its samples.
#[derive(Default)]
pub(crate) struct Metrics(String);

impl Metrics {
    /// Writes `# HELP` and `# TYPE` of a metric and one sample per `(labels, value)`.
    pub(crate) fn family<V: std::fmt::Display>(
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

pub(crate) async fn metrics(state: WebState) -> impl warp::Reply {
    let display = state.display.borrow().clone();
    let mut out = Metrics::default();
    let per_service = |value: fn(&leitsystem_runtime::display::QueueInfo) -> u32| {
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
    let device =
        |d: &leitsystem_runtime::status::DeviceHealth| format!("device=\"{}\"", label(&d.id));
    out.family(
        "leitsystem_device_up",
        "gauge",
        "1 when the device runs (and its link is up, if it has one).",
        devices.iter().map(|d| {
            let up = d.state == leitsystem_runtime::status::DeviceState::Running
                && d.connected != Some(false);
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
