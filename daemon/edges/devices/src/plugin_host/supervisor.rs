//! Supervision: one thread per device owns its plugin instance, restarts it with backoff when
//! it fails, and reports its health on the status board; [`PluginHost`] starts and stops them
//! all and marks devices whose plugin call hangs as stuck.

use super::{
    DEVICE_QUEUE, DeviceEvent, DeviceSpec, EMIT_QUEUE, FIRST_BACKOFF, HEALTHY_AFTER, Instance,
    LoadedPlugin, MAX_BACKOFF, PrintLedger, PrintRouting, Router, Supervise, check_role,
    derive_outputs, feed_displays, load_plugin, route_device, watch_overdue_prints,
};
use leitsystem_plugin::messages::Role;
use leitsystem_plugin::{HostMessage, ffi};
use leitsystem_runtime::catalog::Catalog;
use leitsystem_runtime::runtime::EngineHandle;
use leitsystem_runtime::status::{DeviceHealth, DeviceRegistry, DeviceState, STUCK_AFTER};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a stop waits for the devices' threads in all; a thread still in a plugin call
/// then is left behind (it ends with the process), so shutdown stays within systemd's
/// `TimeoutStopSec`.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// The plugin call a device's thread is in, if any: (since, which call).
#[derive(Debug, Clone, Default)]
pub(crate) struct CallWatch(Arc<Mutex<Option<(Instant, &'static str)>>>);

impl CallWatch {
    /// Runs `call` (named `what`) marked as a plugin call.
    pub(crate) fn around<T>(&self, what: &'static str, call: impl FnOnce() -> T) -> T {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), what));
        let result = call();
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    pub(crate) fn current(&self) -> Option<(Instant, &'static str)> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks devices whose plugin call has not returned for [`STUCK_AFTER`] as stuck (logged once)
/// and running again when the call returns.
pub(crate) async fn watch_calls(
    watches: Vec<(String, CallWatch)>,
    registry: DeviceRegistry,
    shutdown: CancellationToken,
) {
    let mut stuck: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (id, watch) in &watches {
            match watch.current() {
                Some((since, what)) if since.elapsed() >= STUCK_AFTER => {
                    if stuck.insert(id.clone()) {
                        let message = format!(
                            "the plugin's `{what}` has not returned for {} s",
                            since.elapsed().as_secs()
                        );
                        tracing::error!(device = %id, "{message}; the device gets no messages until it does");
                        update(&registry, id, |h| {
                            h.state = DeviceState::Stuck;
                            h.last_error = Some(message);
                        });
                    }
                }
                Some(_) => {}
                None => {
                    if stuck.remove(id) {
                        tracing::info!(device = %id, "the plugin call returned; the device works again");
                        update(&registry, id, |h| {
                            if h.state == DeviceState::Stuck {
                                h.state = DeviceState::Running;
                            }
                        });
                    }
                }
            }
        }
    }
}

pub(crate) fn update(registry: &DeviceRegistry, id: &str, change: impl FnOnce(&mut DeviceHealth)) {
    let mut map = registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(health) = map.get_mut(id) {
        change(health);
    }
}

/// A message that carries a whole state (not a job): only its latest one matters.
pub(crate) fn is_state_message(message: &HostMessage) -> bool {
    matches!(
        message,
        HostMessage::Display { .. } | HostMessage::Desks { .. }
    )
}

pub(crate) fn supervise(
    plugin: LoadedPlugin,
    spec: DeviceSpec,
    inbox: Receiver<Supervise>,
    events: mpsc::Sender<DeviceEvent>,
    registry: DeviceRegistry,
    watch: CallWatch,
) {
    let dropped = Arc::new(AtomicU64::new(0));
    let mut backoff = FIRST_BACKOFF;
    let path = spec.plugin_path.display().to_string();
    // The latest state message of each kind (display state, desk lights): a restarted
    // instance gets them first, so it does not wait for the next change to show the present.
    let mut latest_states: BTreeMap<&'static str, HostMessage> = BTreeMap::new();
    loop {
        update(&registry, &spec.id, |h| h.state = DeviceState::Starting);
        let created = watch.around("create", || {
            Instance::create(&plugin, &spec, &events, &dropped)
        });
        let failure = match created {
            Err((code, reason)) => {
                let what = if code == ffi::PANICKED {
                    "panicked"
                } else {
                    "refused"
                };
                tracing::error!(device = %spec.id, plugin = %plugin.name, file = %path, "create {what}: {reason}");
                reason
            }
            Ok(instance) => {
                update(&registry, &spec.id, |h| {
                    h.state = DeviceState::Running;
                    h.plugin = Some(format!("{} {}", plugin.name, plugin.version));
                });
                tracing::info!(device = %spec.id, plugin = %plugin.name, role = spec.role.as_str(), "device running");
                let started = Instant::now();
                let mut pending: std::collections::VecDeque<HostMessage> =
                    latest_states.values().cloned().collect();
                let failure = loop {
                    let dropped_now = dropped.load(Ordering::Relaxed);
                    update(&registry, &spec.id, |h| h.dropped_messages = dropped_now);
                    let next = match pending.pop_front() {
                        Some(message) => Ok(Supervise::Deliver(message)),
                        None => inbox.recv_timeout(Duration::from_secs(1)),
                    };
                    match next {
                        Ok(Supervise::Deliver(message)) => {
                            if is_state_message(&message) {
                                latest_states.insert(message.kind(), message.clone());
                            }
                            match watch.around("send", || instance.send(&message)) {
                                Ok(()) => {}
                                Err((code, reason)) if code == ffi::PANICKED => break reason,
                                Err((_, reason)) => {
                                    tracing::warn!(device = %spec.id, "message refused: {reason}");
                                    update(&registry, &spec.id, |h| h.last_error = Some(reason));
                                }
                            }
                        }
                        Ok(Supervise::Restart(reason)) => break reason,
                        Ok(Supervise::Stop) | Err(RecvTimeoutError::Disconnected) => {
                            watch.around("destroy", || drop(instance));
                            update(&registry, &spec.id, |h| h.state = DeviceState::Stopped);
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            if started.elapsed() >= HEALTHY_AFTER {
                                backoff = FIRST_BACKOFF;
                            }
                        }
                    }
                };
                tracing::error!(device = %spec.id, plugin = %plugin.name, "device failed: {failure}");
                watch.around("destroy", || drop(instance));
                failure
            }
        };
        update(&registry, &spec.id, |h| {
            h.state = DeviceState::Failed;
            h.last_error = Some(failure.clone());
            h.restarts += 1;
        });
        // Wait out the backoff, but stop at once when asked.
        let until = Instant::now() + backoff;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match inbox.recv_timeout(left) {
                Ok(Supervise::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    update(&registry, &spec.id, |h| h.state = DeviceState::Stopped);
                    return;
                }
                Ok(Supervise::Deliver(message)) if is_state_message(&message) => {
                    latest_states.insert(message.kind(), message);
                }
                Ok(Supervise::Deliver(_)) => {
                    tracing::warn!(device = %spec.id, "device is restarting; a message was not delivered");
                }
                Ok(Supervise::Restart(_)) | Err(RecvTimeoutError::Timeout) => {}
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The running devices.
pub struct PluginHost {
    pub(crate) devices: Vec<(
        DeviceSpec,
        SyncSender<Supervise>,
        std::thread::JoinHandle<()>,
    )>,
    pub(crate) registry: DeviceRegistry,
    pub(crate) scans: leitsystem_runtime::kiosk::ScanFeed,
}

/// Now in ms since the epoch (the wall clock; scan results only).
pub(crate) fn now_millis() -> i64 {
    leitsystem_runtime::clock::Clock::now(&leitsystem_runtime::clock::SystemClock)
}

impl PluginHost {
    /// Loads every configured device's plugin and starts the ones that load; the others are
    /// reported (file, plugin, reason) and marked `not_loaded`. Spawns the router and the
    /// output tasks on the current tokio runtime.
    pub fn start(
        specs: Vec<DeviceSpec>,
        catalog: Arc<Catalog>,
        engine: EngineHandle,
        display: tokio::sync::watch::Receiver<Arc<leitsystem_runtime::display::PublicDisplay>>,
        print_answer_timeout: Duration,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> PluginHost {
        let started_at = now_millis();
        // Subscribed before anything is printed: every ticket issued from now on is seen.
        let committed = engine.feed();
        let registry: DeviceRegistry = Arc::new(Mutex::new(BTreeMap::new()));
        // One queue per device, each with a router task of its own.
        let mut queues: HashMap<String, mpsc::Receiver<DeviceEvent>> = HashMap::new();
        let mut devices = Vec::new();
        let mut watches = Vec::new();
        for spec in specs {
            registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(
                    spec.id.clone(),
                    DeviceHealth {
                        id: spec.id.clone(),
                        role: spec.role.as_str().to_string(),
                        plugin_file: spec.plugin_path.display().to_string(),
                        plugin: None,
                        state: DeviceState::Starting,
                        connected: None,
                        paper: None,
                        cover_open: None,
                        printed: 0,
                        print_failures: 0,
                        last_error: None,
                        restarts: 0,
                        dropped_messages: 0,
                    },
                );
            let loaded = load_plugin(&spec.plugin_path).and_then(|p| {
                check_role(&p, &spec)?;
                Ok(p)
            });
            let plugin = match loaded {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(device = %spec.id, "device not started: {e}");
                    update(&registry, &spec.id, |h| {
                        h.state = DeviceState::NotLoaded;
                        h.last_error = Some(e.to_string());
                    });
                    continue;
                }
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(DEVICE_QUEUE);
            let thread_spec = spec.clone();
            let (thread_events, device_events) = mpsc::channel(EMIT_QUEUE);
            queues.insert(spec.id.clone(), device_events);
            let thread_registry = registry.clone();
            let watch = CallWatch::default();
            let thread_watch = watch.clone();
            match std::thread::Builder::new()
                .name(format!("device-{}", spec.id))
                .spawn(move || {
                    supervise(
                        plugin,
                        thread_spec,
                        rx,
                        thread_events,
                        thread_registry,
                        thread_watch,
                    )
                }) {
                Ok(thread) => {
                    watches.push((spec.id.clone(), watch));
                    devices.push((spec, tx, thread));
                }
                Err(e) => tracing::error!(device = %spec.id, "cannot start its thread: {e}"),
            }
        }
        let host = PluginHost {
            devices,
            registry,
            scans: leitsystem_runtime::kiosk::scan_feed(),
        };
        tracker.spawn(watch_calls(
            watches,
            host.registry.clone(),
            shutdown.clone(),
        ));
        let outputs = host.outputs();
        let printers = PrintRouting::new(&host.devices);
        let ledger = PrintLedger::default();
        let router = Arc::new(Router {
            catalog: catalog.clone(),
            engine: engine.clone(),
            registry: host.registry.clone(),
            scans: host.scans.clone(),
            ledger: ledger.clone(),
            // All printers at start: failures recorded before a restart are durable.
            failures_outstanding: Arc::new(Mutex::new(
                host.devices
                    .iter()
                    .filter(|(spec, _, _)| spec.role == Role::Printer)
                    .map(|(spec, _, _)| spec.id.clone())
                    .collect(),
            )),
        });
        for (spec, supervisor, _) in &host.devices {
            if let Some(events) = queues.remove(&spec.id) {
                tracker.spawn(route_device(
                    router.clone(),
                    spec.clone(),
                    supervisor.clone(),
                    events,
                    shutdown.clone(),
                ));
            }
        }
        tracker.spawn(watch_overdue_prints(router, shutdown.clone()));
        let displays = outputs
            .iter()
            .filter(|(role, _, _)| *role == Role::Display)
            .map(|(_, id, tx)| (id.clone(), tx.clone()))
            .collect();
        tracker.spawn(feed_displays(display, displays, shutdown.clone()));
        let lighted: Vec<crate::desk_lights::LightedDevice> = host
            .devices
            .iter()
            .filter(|(spec, _, _)| spec.role == Role::Buttons)
            .map(|(spec, _, _)| crate::desk_lights::LightedDevice {
                id: spec.id.clone(),
                desks: spec.desks.clone(),
            })
            .collect();
        let buttons: HashMap<String, SyncSender<Supervise>> = outputs
            .iter()
            .filter(|(role, _, _)| *role == Role::Buttons)
            .map(|(_, id, tx)| (id.clone(), tx.clone()))
            .collect();
        tracker.spawn(crate::desk_lights::feed(
            engine.clone(),
            lighted,
            move |id: &str, message: HostMessage| {
                if let Some(tx) = buttons.get(id)
                    && tx.try_send(Supervise::Deliver(message)).is_err()
                {
                    tracing::warn!(device = %id, "device queue full; desk lights not delivered");
                }
            },
            shutdown.clone(),
        ));
        tracker.spawn(derive_outputs(
            committed,
            engine.clone(),
            printers,
            ledger,
            print_answer_timeout,
            started_at,
            catalog,
            shutdown,
        ));
        host
    }

    /// Device health, shared.
    pub fn registry(&self) -> DeviceRegistry {
        self.registry.clone()
    }

    /// Waits (at most `timeout`) until every device has made its first attempt to start:
    /// running, failed (and retrying) or not loaded. Returns the ids still starting.
    pub async fn first_attempts(&self, timeout: Duration) -> Vec<String> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let starting: Vec<String> = self
                .registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .values()
                .filter(|h| h.state == DeviceState::Starting)
                .map(|h| h.id.clone())
                .collect();
            if starting.is_empty() || tokio::time::Instant::now() >= until {
                return starting;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The outcome of every scan (checked in or refused, with the kiosk's texts).
    pub fn scans(&self) -> leitsystem_runtime::kiosk::ScanFeed {
        self.scans.clone()
    }

    pub(crate) fn outputs(&self) -> Vec<(Role, String, SyncSender<Supervise>)> {
        self.devices
            .iter()
            .filter(|(spec, _, _)| {
                matches!(spec.role, Role::Printer | Role::Display | Role::Buttons)
            })
            .map(|(spec, tx, _)| (spec.role, spec.id.clone(), tx.clone()))
            .collect()
    }

    /// Stops every device (destroying its instance) and waits for the supervisors.
    pub fn stop(self) {
        for (_, tx, _) in &self.devices {
            let _ = tx.try_send(Supervise::Stop);
        }
        let deadline = Instant::now() + STOP_WAIT;
        for (spec, tx, thread) in self.devices {
            drop(tx);
            // Bounded: a thread stuck in a plugin call must not hold up the shutdown.
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !thread.is_finished() {
                tracing::error!(
                    device = %spec.id,
                    "the device's thread is still in a plugin call; stopping without it"
                );
                continue;
            }
            if thread.join().is_err() {
                tracing::error!(device = %spec.id, "supervisor ended abnormally");
            }
        }
    }
}
