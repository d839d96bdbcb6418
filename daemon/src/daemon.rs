//! The composition root: builds the runtime and starts every edge (devices, sync, web,
//! control socket) under one shutdown token. The only module that knows every edge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::clock::{DayGate, SystemClock};
use crate::config::Config;
use crate::control;
pub use leitsystem_runtime::runtime::*;

/// How long start-up waits for the devices' first start before it reports ready anyway.
const DEVICE_START_WAIT: Duration = Duration::from_secs(20);

/// The daemon's set-up in one line, for systemd's status: site, devices, web and MQTT.
fn readiness_summary(config: &Config, catalog: &Catalog, devices: usize) -> String {
    let web = config.web.as_ref().map_or_else(
        || "no web server".to_string(),
        |w| format!("web on {}", w.listen),
    );
    let mqtt = config.mqtt.as_ref().map_or_else(
        || "no MQTT".to_string(),
        |m| format!("MQTT to {}:{}", m.host.get_ref(), m.port.get_ref()),
    );
    format!("site {}, {devices} devices, {web}, {mqtt}", catalog.site_id)
}

/// Runs the daemon until `shutdown` fires (SIGTERM/SIGINT in `main`) or a fatal error.
pub async fn run(
    config: Config,
    config_dir: PathBuf,
    data_dir: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let catalog = Arc::new(crate::catalog::from_config(&config).context("building the catalog")?);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let options = store_options(&config);
    let socket_path = config.control_socket(&data_dir);
    crate::service_manager::status(&format!("Opening the store in {}", data_dir.display()));
    let open_catalog = catalog.clone();
    let open_dir = data_dir.clone();
    let (engine, store) =
        tokio::task::spawn_blocking(move || open_engine(open_catalog, &open_dir, &options))
            .await
            .context("store task")?
            .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    tracing::info!(
        data_dir = %data_dir.display(),
        day = ?engine.state().day,
        events = engine.state().last_seq,
        tickets_today = engine.state().tickets.len(),
        "store opened"
    );

    let fatal = CancellationToken::new();
    let gate = match config.clock.sync_source() {
        Some(source) => {
            tracing::info!(
                source = %source.describe(),
                "a service day starts only on a synchronised clock"
            );
            DayGate::requiring(source, catalog.calendar.clone())
        }
        None => DayGate::open(catalog.calendar.clone()),
    };
    let (handle, engine_thread) =
        spawn_engine(engine, store, Arc::new(SystemClock), gate, fatal.clone())
            .context("starting the engine thread")?;

    let listener = control::bind(&socket_path)
        .await
        .context("opening the control socket")?;
    let web_listener = match &config.web {
        Some(web) => Some(
            tokio::net::TcpListener::bind(web.listen)
                .await
                .with_context(|| format!("listening on {} for the web server", web.listen))?,
        ),
        None => None,
    };
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let specs = crate::plugin_host::device_specs(&config, &config_dir, &data_dir);
    let specs_count = specs.len();
    let display =
        crate::display::spawn_feed(&tracker, handle.clone(), catalog.clone(), stop.clone());
    // Loading plugins (dlopen, the plugins' constructors) blocks: off the async workers, so
    // the engine's and the display's tasks keep running meanwhile (needs the multi-threaded
    // runtime `main` builds).
    crate::service_manager::status("Starting the devices");
    let devices = tokio::task::block_in_place(|| {
        crate::plugin_host::PluginHost::start(
            specs,
            catalog.clone(),
            handle.clone(),
            display.clone(),
            Duration::from_secs(
                u64::try_from(*config.plugins.print_answer_seconds.get_ref()).unwrap_or(30),
            ),
            stop.clone(),
            &tracker,
        )
    });
    // READY waits for every device's first start (a printer that takes a while to open),
    // bounded: a device hanging in its driver must not keep the appliance from starting.
    let still_starting = devices.first_attempts(DEVICE_START_WAIT).await;
    if !still_starting.is_empty() {
        tracing::warn!(
            devices = ?still_starting,
            "devices still starting after {}s; going on without waiting for them",
            DEVICE_START_WAIT.as_secs()
        );
    }
    let sync_status = match &config.mqtt {
        Some(mqtt) => {
            let status = crate::sync::SyncStatus::default();
            crate::sync::start(
                mqtt,
                &config_dir,
                &data_dir,
                catalog.clone(),
                handle.clone(),
                status.clone(),
                stop.clone(),
                &tracker,
            )
            .context("starting the booking sync")?;
            status
        }
        None => crate::sync::SyncStatus::disabled(),
    };
    if let Some(web_listener) = web_listener {
        if let Ok(address) = web_listener.local_addr() {
            tracing::info!(%address, "web server: http://{address}/display");
        }
        let state = crate::web::WebState::new(
            handle.clone(),
            devices.registry(),
            sync_status.clone(),
            display.clone(),
            stop.clone(),
        )
        .with_api(
            catalog.clone(),
            config.web.as_ref(),
            devices.scans(),
            Some(&data_dir),
        );
        tracker.spawn(crate::web::serve(web_listener, state));
    }
    tracker.spawn(control::serve(
        listener,
        handle.clone(),
        devices.registry(),
        sync_status,
        stop.clone(),
        tracker.clone(),
    ));
    tracker.spawn(scheduler(handle.clone(), catalog.clone(), stop.clone()));
    let summary = readiness_summary(&config, &catalog, specs_count);
    tracing::info!(socket = %socket_path.display(), site = %catalog.site_id, "ready");
    // Only now: the store is open, the plugins started, the control socket and the web server
    // listen and the sync (if configured) runs. Then the watchdog and the running status.
    crate::service_manager::ready(&format!("Ready: {summary}"));
    tracker.spawn(crate::service_manager::heartbeat(
        handle.clone(),
        summary,
        stop.clone(),
    ));
    tracker.close();

    let failed = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = fatal.cancelled() => true,
    };
    tracing::info!("shutting down");
    crate::service_manager::stopping("Stopping: devices first, then the engine finishes its queue");
    stop.cancel();
    // Devices first: they stop sending commands, their instances are destroyed.
    let _ = tokio::task::spawn_blocking(move || devices.stop()).await;
    drop(handle);
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = tracker.len(),
            "tasks still running after the grace period"
        );
    }
    let _ = std::fs::remove_file(&socket_path);
    // The engine thread ends once the last handle is gone, after answering what was queued.
    let joined = tokio::time::timeout(
        SHUTDOWN_GRACE,
        tokio::task::spawn_blocking(move || engine_thread.join()),
    )
    .await;
    match joined {
        Ok(Ok(Ok(()))) => {}
        Err(_) => tracing::error!("the engine did not stop within the grace period"),
        _ => tracing::error!("the engine thread ended abnormally"),
    }
    if failed {
        anyhow::bail!("stopped after a fatal store error");
    }
    tracing::info!("stopped");
    Ok(())
}
