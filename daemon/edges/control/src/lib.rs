//! The local control socket: newline-delimited JSON over a Unix socket, used by
//! `leitsystemd ctl` (and the system tests) to drive the engine by hand. Commands sent here go
//! through the same engine handle as every other input.
//!
//! Request, one per line (at most [`MAX_LINE`] bytes):
//! - `{"op":"execute","request_id":"r-1","command":{"type":"walk_in","service":"ausweis"}}`
//! - `{"op":"state"}` (today's tickets, desks, waiting counts, estimated waits)
//! - `{"op":"verify"}` (replays the log and compares it with the views and the live state)
//! - `{"op":"devices"}` (health of every configured device)
//! - `{"op":"events","from_seq":1,"limit":100}` (the durable log, at most 10,000 per request)
//! - `{"op":"sync"}` (the MQTT booking sync: connection, counters, per-day counts and digests)
//! - `{"op":"backup"}` (writes a consistent backup into `<data_dir>/backups/`, between two
//!   commits; answers its path and summary: `leitsystemd backup FILE` copies it out)
//!
//! Response, one line: `{"ok":true,...}` or `{"ok":false,"error":{"code":..,"message":..}}`.
//!
//! An edge of the daemon (`leitsystem-control`): builds on the runtime and never on another
//! edge; the composition root (`leitsystemd`) starts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use leitsystem_runtime::domain::{Command, CommandRequest, EventRecord, Outcome};
use leitsystem_runtime::runtime::{EngineHandle, ExecuteError};
use leitsystem_runtime::status::{DayView, SyncStatus, SyncView};
use leitsystem_runtime::status::{DeviceHealth, DeviceRegistry};

/// Longest accepted request line in bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// Longest accepted idempotency key.
pub const MAX_REQUEST_ID: usize = 200;
/// Most control connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Execute a command.
    Execute {
        /// Idempotency key.
        #[serde(default)]
        request_id: Option<String>,
        /// The command.
        command: Command,
    },
    /// Today's state.
    State,
    /// Check the store's consistency.
    Verify,
    /// Health of every configured device.
    Devices,
    /// Read the durable event log from `from_seq` on (at most `limit`, capped at 10,000).
    Events {
        /// First sequence number.
        from_seq: u64,
        /// Most entries to return.
        limit: u32,
    },
    /// The booking sync's state and the appliance's per-day booking counts and digests.
    Sync,
    /// Write a backup of the store into the data directory (see [`leitsystem_runtime::backup`]).
    Backup,
}

/// Most log entries one `events` request returns.
pub const MAX_EVENTS_PER_REQUEST: u32 = 10_000;

/// The error part of a response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlError {
    /// Machine-readable code (`desk_not_open`, `bad_request`, `storage`, ...).
    pub code: String,
    /// Plain message.
    pub message: String,
    /// Structured details of a refused command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Today's state as the control socket shows it (built by the runtime).
pub use leitsystem_runtime::runtime::StateView;

/// A response on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Success?
    pub ok: bool,
    /// Result of an executed command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The request id was seen before: `outcome` is the first answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// State view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateView>,
    /// Device health returned by `devices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceHealth>>,
    /// Log entries returned by `events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventRecord>>,
    /// The booking sync, returned by `sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncView>,
    /// Problems found by `verify` (empty when consistent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
    /// The backup written by `backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<leitsystem_runtime::backup::BackupSummary>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ControlError>,
}

impl ControlResponse {
    fn error(code: &str, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            outcome: None,
            duplicate: false,
            state: None,
            devices: None,
            events: None,
            sync: None,
            problems: None,
            backup: None,
            error: Some(ControlError {
                code: code.to_string(),
                message: message.into(),
                details: None,
            }),
        }
    }

    fn success() -> Self {
        Self {
            ok: true,
            outcome: None,
            duplicate: false,
            state: None,
            devices: None,
            events: None,
            sync: None,
            problems: None,
            backup: None,
            error: None,
        }
    }
}

/// Errors of the control server.
#[derive(Debug, thiserror::Error)]
pub enum ControlServerError {
    /// Another daemon answers on the socket.
    #[error("another leitsystemd already listens on {0}")]
    InUse(PathBuf),
    /// Binding failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Binds the control socket, replacing a stale socket file left by a crash.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlServerError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            // Never delete something that is not a stale socket of ours.
            return Err(ControlServerError::Bind {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ),
            });
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlServerError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let listener = UnixListener::bind(path).map_err(|source| ControlServerError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict the control socket");
    }
    Ok(listener)
}

/// Serves the control socket until `shutdown` fires.
pub async fn serve(
    listener: UnixListener,
    engine: EngineHandle,
    devices: DeviceRegistry,
    sync: SyncStatus,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("too many control connections; refusing one");
            continue;
        };
        let engine = engine.clone();
        let devices = devices.clone();
        let sync = sync.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = serve_connection(stream, engine, devices, sync, shutdown).await {
                tracing::debug!(error = %e, "control connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: UnixStream,
    engine: EngineHandle,
    devices: DeviceRegistry,
    sync: SyncStatus,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = limited.read_until(b'\n', &mut line) => read?,
        };
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let response = ControlResponse::error(
                "bad_request",
                format!("request longer than {MAX_LINE} bytes"),
            );
            tokio::select! {
                _ = shutdown.cancelled() => {}
                written = write_response(&mut write, &response) => written?,
            }
            return Ok(());
        }
        // A client that stops reading must not hold up shutdown (it would keep the engine
        // handle alive): the answer and its write give way to the shutdown signal.
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            written = async {
                let response = handle_line(&line, &engine, &devices, &sync).await;
                write_response(&mut write, &response).await
            } => written?,
        }
    }
}

async fn write_response(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &ControlResponse,
) -> std::io::Result<()> {
    let mut body = serde_json::to_vec(response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    body.push(b'\n');
    write.write_all(&body).await
}

async fn handle_line(
    line: &[u8],
    engine: &EngineHandle,
    devices: &DeviceRegistry,
    sync: &SyncStatus,
) -> ControlResponse {
    let request: ControlRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return ControlResponse::error("bad_request", format!("invalid request: {e}")),
    };
    match request {
        ControlRequest::Execute {
            request_id,
            command,
        } => {
            if request_id
                .as_ref()
                .is_some_and(|id| id.len() > MAX_REQUEST_ID)
            {
                return ControlResponse::error(
                    "bad_request",
                    format!("request_id longer than {MAX_REQUEST_ID} bytes"),
                );
            }
            let request = CommandRequest {
                request_id,
                source: "ctl".to_string(),
                command,
            };
            match engine.execute(request).await {
                Ok(executed) => ControlResponse {
                    outcome: Some(executed.outcome),
                    duplicate: executed.duplicate,
                    ..ControlResponse::success()
                },
                Err(ExecuteError::Rejected(e)) => {
                    let mut response = ControlResponse::error(e.code(), e.to_string());
                    if let Some(err) = response.error.as_mut() {
                        err.details = serde_json::to_value(&e).ok();
                    }
                    response
                }
                Err(e) => ControlResponse::error(e.code(), e.to_string()),
            }
        }
        ControlRequest::State => match engine.state_view().await {
            Ok(state) => ControlResponse {
                state: Some(state),
                ..ControlResponse::success()
            },
            Err(e) => ControlResponse::error(e.code(), e.to_string()),
        },
        ControlRequest::Devices => ControlResponse {
            devices: Some(
                devices
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .values()
                    .cloned()
                    .collect(),
            ),
            ..ControlResponse::success()
        },
        ControlRequest::Events { from_seq, limit } => {
            match engine
                .events(from_seq, limit.min(MAX_EVENTS_PER_REQUEST))
                .await
            {
                Ok(events) => ControlResponse {
                    events: Some(events),
                    ..ControlResponse::success()
                },
                Err(e) => ControlResponse::error(e.code(), e.to_string()),
            }
        }
        ControlRequest::Sync => match engine.booking_days(None).await {
            Ok(days) => ControlResponse {
                sync: Some(SyncView {
                    state: sync.snapshot(),
                    days: days
                        .into_iter()
                        .map(|(day, (count, digest))| (day.to_string(), DayView { count, digest }))
                        .collect(),
                }),
                ..ControlResponse::success()
            },
            Err(e) => ControlResponse::error(e.code(), e.to_string()),
        },
        ControlRequest::Backup => match engine.backup().await {
            Ok(summary) => ControlResponse {
                backup: Some(summary),
                ..ControlResponse::success()
            },
            Err(e) => ControlResponse::error(e.code(), e.to_string()),
        },
        ControlRequest::Verify => match engine.verify().await {
            Ok(problems) => ControlResponse {
                ok: problems.is_empty(),
                problems: Some(problems),
                ..ControlResponse::success()
            },
            Err(e) => ControlResponse::error(e.code(), e.to_string()),
        },
    }
}

/// A blocking client for the control socket (used by `leitsystemd ctl` and the tests).
#[derive(Debug)]
pub struct ControlClient {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl ControlClient {
    /// Connects to the socket.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        Ok(Self {
            reader: std::io::BufReader::new(stream),
        })
    }

    /// Sends one request and waits for its response.
    pub fn request(&mut self, request: &ControlRequest) -> std::io::Result<ControlResponse> {
        use std::io::{BufRead, Write};
        let mut body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        body.push(b'\n');
        self.reader.get_mut().write_all(&body)?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ));
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }
}
