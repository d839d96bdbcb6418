//! The clerk and kiosk WebSockets (capped per kind; a desk socket closes with 4401 at logout).

use super::{ApiState, Ctx, HEARTBEAT, ROUTES, authorize, cross_origin, desk_view, error};
use futures_util::{SinkExt, StreamExt};
use leitsystem_runtime::kiosk::ScanFeed;
use serde_json::json;
use std::net::IpAddr;
use warp::http::{HeaderMap, StatusCode};

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
