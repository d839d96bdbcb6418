//! `gpio-buttons`: desk call buttons on GPIO lines, through the kernel's GPIO character device
//! (`/dev/gpiochipN`, uAPI v2) with the `gpiocdev` crate. Works on every Raspberry Pi (4, 5
//! with its RP1 chip, Zero 2 W) and any Linux board; lines are looked up by name (`GPIO17`),
//! never by chip number (the Pi 5 numbers its chips differently). Why not rppal: its
//! repository was archived on 1 July 2025 (no fixes, no new hardware); see `README.md`.
//!
//! Options (the device's `options`):
//! ```toml
//! options = { debounce_ms = 20, long_press_ms = 1000, stuck_ms = 10000, bias = "pull_up",
//!             active_low = true, buttons = [
//!   { line = "GPIO17", desk = "1", action = "next", long_action = "alarm" },
//!   { line = "GPIO27", desk = "1", action = "recall" } ],
//!   leds = [ { line = "GPIO23", desk = "1" } ], blink_ms = 250, alarm_blink_s = 300 }
//! ```
//! An LED per desk (optional) is lit while a visitor is called there and blinks after the
//! desk's silent alarm ([`leds`]), from the host's `desks` messages.
//! Actions: `next`, `recall`, `start`, `finish` (or `done`), `no_show`, `park`, `resume`,
//! `pause`, `open`, `close`, `alarm`. Each press has a unique `event_id`, so a repeated
//! delivery has one effect; two real presses are two presses (the engine turns a second
//! "next" within `repeat_next_within_seconds` into a repeat of the call).
//!
//! The timing per button is [`machine::Button`] (pure); the loop [`run`] drives it from any
//! [`Lines`], the real [`GpioLines`] or a scripted one in the tests.
//!
//! Why about 690 lines in one file: the options (with every error text), the line access through gpiocdev behind the `Lines` trait and the event loop belong to one device; the timing machine and the LED levels, the parts tested alone, are `machine.rs` and `leds.rs`.

pub mod leds;
pub mod machine;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use std::sync::Mutex;

use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Value as Level};
use leitsystem_plugin::messages::{ButtonAction, DeskLight, Role};
use leitsystem_plugin::{DeviceConfig, Driver, Host, HostMessage, LogLevel, PluginMessage};
use serde_json::{Map, Value};

use crate::leds::{Blink, LedSpec, led_on};
use crate::machine::{Button, Output, Timing};

const OPTIONS: [&str; 10] = [
    "buttons",
    "leds",
    "blink_ms",
    "alarm_blink_s",
    "debounce_ms",
    "long_press_ms",
    "stuck_ms",
    "bias",
    "active_low",
    "reconnect_max_ms",
];
const BUTTON_KEYS: [&str; 4] = ["line", "desk", "action", "long_action"];
const LED_KEYS: [&str; 2] = ["line", "desk"];
/// The longest wait for an edge before the loop looks at `stop` and the timers.
const WAIT: Duration = Duration::from_millis(50);

/// One configured button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonSpec {
    /// The line's name (`GPIO17`).
    pub line: String,
    /// The desk it belongs to.
    pub desk: String,
    /// What a press does.
    pub action: ButtonAction,
    /// What a long press does, if anything.
    pub long_action: Option<ButtonAction>,
}

/// A device's options, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The buttons.
    pub buttons: Vec<ButtonSpec>,
    /// Kernel (and software) debounce.
    pub debounce: Duration,
    /// Held this long: the long action.
    pub long_press: Duration,
    /// Held this long: stuck.
    pub stuck: Duration,
    /// Pull-up, pull-down or none.
    pub bias: Bias,
    /// Pressed = low (a button to ground with the pull-up).
    pub active_low: bool,
    /// Longest pause between attempts to get the lines.
    pub reconnect_max: Duration,
    /// One LED per desk, at most (active high: lit = line high).
    pub leds: Vec<LedSpec>,
    /// How an alarm blinks the LEDs.
    pub blink: Blink,
}

/// Parses an action name.
pub fn parse_action(word: &str) -> Option<ButtonAction> {
    Some(match word {
        "next" => ButtonAction::Next,
        "recall" => ButtonAction::Recall,
        "start" => ButtonAction::Start,
        "finish" | "done" => ButtonAction::Finish,
        "no_show" => ButtonAction::NoShow,
        "park" => ButtonAction::Park,
        "resume" => ButtonAction::Resume,
        "open" => ButtonAction::Open,
        "pause" => ButtonAction::Pause,
        "close" => ButtonAction::Close,
        "alarm" => ButtonAction::Alarm,
        _ => return None,
    })
}

/// One entry of the `buttons` or `leds` list, checked: a table of known keys with a `line`
/// and a `desk` of the device's desks (any desk when it lists none).
fn line_entry<'a>(
    list: &str,
    i: usize,
    entry: &'a Value,
    keys: &[&str],
    desks: &[String],
) -> Result<(&'a Map<String, Value>, &'a str, &'a str), String> {
    let Value::Object(table) = entry else {
        return Err(format!("{list}[{i}] must be a table"));
    };
    if let Some(key) = table.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!(
            "{list}[{i}]: unknown key '{key}'; known: {}",
            keys.join(", ")
        ));
    }
    let text = |key: &str| {
        table
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let line = text("line").ok_or_else(|| {
        format!("{list}[{i}]: 'line' (a GPIO line name, e.g. \"GPIO17\") is missing")
    })?;
    let desk = text("desk").ok_or_else(|| format!("{list}[{i}]: 'desk' is missing"))?;
    if !desks.is_empty() && !desks.iter().any(|d| d == desk) {
        return Err(format!(
            "{list}[{i}]: desk '{desk}' is not one of the device's desks ({})",
            desks.join(", ")
        ));
    }
    Ok((table, line, desk))
}

impl Settings {
    /// Reads and checks the options against the device's desks; an error names the option.
    pub fn from_options(options: &Value, desks: &[String]) -> Result<Settings, String> {
        let empty = Map::new();
        let options = match options {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(format!("the options must be a table, not {other}")),
        };
        if let Some(key) = options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
            return Err(format!(
                "unknown option '{key}'; known options: {}",
                OPTIONS.join(", ")
            ));
        }
        let Some(Value::Array(list)) = options.get("buttons") else {
            return Err("option 'buttons' is missing: a list of { line = \"GPIO17\", desk = \"1\", action = \"next\" }".into());
        };
        if list.is_empty() {
            return Err("option 'buttons' lists no button".into());
        }
        let mut buttons = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let (b, line, desk) = line_entry("buttons", i, entry, &BUTTON_KEYS, desks)?;
            let text = |key: &str| b.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
            let action_of = |key: &str| -> Result<Option<ButtonAction>, String> {
                match text(key) {
                    None => Ok(None),
                    Some(word) => parse_action(word).map(Some).ok_or_else(|| {
                        format!("buttons[{i}]: '{key}' \"{word}\" is not one of next, recall, start, finish, no_show, park, resume, pause, open, close, alarm")
                    }),
                }
            };
            let action =
                action_of("action")?.ok_or_else(|| format!("buttons[{i}]: 'action' is missing"))?;
            if buttons.iter().any(|other: &ButtonSpec| other.line == line) {
                return Err(format!("buttons[{i}]: line '{line}' is used twice"));
            }
            buttons.push(ButtonSpec {
                line: line.to_string(),
                desk: desk.to_string(),
                action,
                long_action: action_of("long_action")?,
            });
        }
        let millis = |key: &str, default: u64, range: std::ops::RangeInclusive<u64>| match options
            .get(key)
        {
            None => Ok(Duration::from_millis(default)),
            Some(value) => value
                .as_u64()
                .filter(|n| range.contains(n))
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    format!(
                        "option '{key}' must be {}..={} milliseconds, not {value}",
                        range.start(),
                        range.end()
                    )
                }),
        };
        let bias = match options
            .get("bias")
            .and_then(Value::as_str)
            .unwrap_or("pull_up")
        {
            "pull_up" => Bias::PullUp,
            "pull_down" => Bias::PullDown,
            "none" => Bias::Disabled,
            other => {
                return Err(format!(
                    "option 'bias' must be \"pull_up\", \"pull_down\" or \"none\", not \"{other}\""
                ));
            }
        };
        let active_low = match options.get("active_low") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "option 'active_low' must be true or false, not {other}"
                ));
            }
        };
        let mut leds: Vec<LedSpec> = Vec::new();
        match options.get("leds") {
            None => {}
            Some(Value::Array(list)) => {
                for (i, entry) in list.iter().enumerate() {
                    let (_, line, desk) = line_entry("leds", i, entry, &LED_KEYS, desks)?;
                    if buttons.iter().any(|b| b.line == line) || leds.iter().any(|l| l.line == line)
                    {
                        return Err(format!("leds[{i}]: line '{line}' is used twice"));
                    }
                    if leds.iter().any(|l| l.desk == desk) {
                        return Err(format!("leds[{i}]: desk '{desk}' has a second LED"));
                    }
                    leds.push(LedSpec {
                        desk: desk.to_string(),
                        line: line.to_string(),
                    });
                }
            }
            Some(other) => {
                return Err(format!(
                    "option 'leds' must be a list of {{ line = \"GPIO23\", desk = \"1\" }}, not {other}"
                ));
            }
        }
        let settings = Settings {
            buttons,
            leds,
            blink: Blink {
                half_period: millis("blink_ms", 250, 50..=5000)?,
                alarm_for: match options.get("alarm_blink_s") {
                    None => Duration::from_secs(300),
                    Some(value) => value
                        .as_u64()
                        .filter(|n| (1..=86_400).contains(n))
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            format!("option 'alarm_blink_s' must be 1..=86400 seconds, not {value}")
                        })?,
                },
            },
            debounce: millis("debounce_ms", 20, 0..=1000)?,
            long_press: millis("long_press_ms", 1000, 100..=60_000)?,
            stuck: millis("stuck_ms", 10_000, 1000..=3_600_000)?,
            bias,
            active_low,
            reconnect_max: millis("reconnect_max_ms", 5000, 100..=600_000)?,
        };
        if settings.stuck <= settings.long_press {
            return Err("option 'stuck_ms' must be longer than 'long_press_ms'".into());
        }
        Ok(settings)
    }

    fn timing(&self, spec: &ButtonSpec) -> Timing {
        Timing {
            debounce: self.debounce,
            long_press: self.long_press,
            stuck: self.stuck,
            has_long_action: spec.long_action.is_some(),
        }
    }
}

/// One edge: which button (index into the settings' buttons), pressed or released, and when
/// (monotonic time, the clock of [`Lines::now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Index of the button.
    pub button: usize,
    /// Pressed (active) or released.
    pub pressed: bool,
    /// When.
    pub at: Duration,
}

/// Where edges come from and LEDs go to: the GPIO lines, or a script in the tests.
pub trait Lines {
    /// Waits up to `timeout` for edges.
    fn wait(&mut self, timeout: Duration) -> Result<Vec<Edge>, String>;
    /// The monotonic time now, on the edges' clock.
    fn now(&self) -> Duration;
    /// Switches LED `led` (index into the settings' LEDs) on or off.
    fn set_led(&mut self, led: usize, on: bool) -> Result<(), String>;
}

/// What the loop reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A press: desk and action.
    Press(String, ButtonAction),
    /// A button held past `stuck_ms` (line name).
    Stuck(String),
    /// A stuck button was released (line name).
    Released(String),
}

/// Drives every button's machine from `lines` until `stop` or an error of the lines (which
/// is returned), and sets each LED to what `leds` says (one level per LED of the settings)
/// whenever that changes.
pub fn run(
    lines: &mut dyn Lines,
    settings: &Settings,
    stop: &AtomicBool,
    report: &mut dyn FnMut(Report),
    leds: &dyn Fn() -> Vec<bool>,
) -> String {
    let mut shown: Vec<Option<bool>> = vec![None; settings.leds.len()];
    // Often enough that a blink's edges are late by at most a fifth of its half period.
    let wait = if settings.leds.is_empty() {
        WAIT
    } else {
        WAIT.min(settings.blink.half_period / 5)
    };
    let mut buttons: Vec<Button> = settings
        .buttons
        .iter()
        .map(|spec| Button::new(settings.timing(spec)))
        .collect();
    let mut emit = |index: usize, output: Output| {
        let spec = &settings.buttons[index];
        match output {
            Output::Short => report(Report::Press(spec.desk.clone(), spec.action)),
            Output::Long => {
                if let Some(action) = spec.long_action {
                    report(Report::Press(spec.desk.clone(), action));
                }
            }
            Output::Stuck => report(Report::Stuck(spec.line.clone())),
            Output::Released => report(Report::Released(spec.line.clone())),
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let now = lines.now();
        let timeout = buttons
            .iter()
            .filter_map(Button::next_deadline)
            .map(|d| d.saturating_sub(now))
            .min()
            .map_or(wait, |d| d.min(wait));
        match lines.wait(timeout) {
            Ok(edges) => {
                for edge in edges {
                    if let Some(button) = buttons.get_mut(edge.button)
                        && let Some(output) = button.edge(edge.pressed, edge.at)
                    {
                        emit(edge.button, output);
                    }
                }
            }
            Err(why) => return why,
        }
        let now = lines.now();
        for (index, button) in buttons.iter_mut().enumerate() {
            if let Some(output) = button.tick(now) {
                emit(index, output);
            }
        }
        for (index, (on, was)) in leds().into_iter().zip(shown.iter_mut()).enumerate() {
            if *was != Some(on) {
                if let Err(why) = lines.set_led(index, on) {
                    return why;
                }
                *was = Some(on);
            }
        }
    }
    String::new()
}

/// The LED levels for `lights` at `now_ms` (ms since 1970): one per LED of `settings`.
pub fn led_levels(settings: &Settings, lights: &[DeskLight], now_ms: i64) -> Vec<bool> {
    settings
        .leds
        .iter()
        .map(|led| {
            let light = lights.iter().find(|l| l.desk == led.desk);
            led_on(light, now_ms, settings.blink)
        })
        .collect()
}

/// The wall clock in ms since 1970 (the clock the host's alarm times are on).
pub fn wall_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The monotonic clock the kernel stamps GPIO edges with.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The real lines: one request per GPIO chip, edges on both sides, kernel debounce, bias and
/// active-low as configured, consumer `leitsystemd`; and one output request per LED.
pub struct GpioLines {
    requests: Vec<(gpiocdev::Request, BTreeMap<u32, usize>)>,
    leds: Vec<(gpiocdev::Request, u32)>,
}

impl GpioLines {
    /// Finds the lines by name and requests them (the LEDs as outputs, off).
    pub fn request(settings: &Settings) -> Result<GpioLines, String> {
        let names: Vec<&str> = settings.buttons.iter().map(|b| b.line.as_str()).collect();
        let led_names: Vec<&str> = settings.leds.iter().map(|l| l.line.as_str()).collect();
        let all: Vec<&str> = names.iter().chain(led_names.iter()).copied().collect();
        let found = gpiocdev::find_named_lines(&all, true)
            .map_err(|e| format!("cannot look the GPIO lines up: {e}"))?;
        let mut leds = Vec::new();
        for name in &led_names {
            let line = found
                .get(name)
                .ok_or_else(|| format!("no GPIO line named '{name}' (see `gpioinfo`)"))?;
            let request = gpiocdev::Request::builder()
                .on_chip(line.chip.clone())
                .with_consumer("leitsystemd")
                .with_line(line.info.offset)
                .as_output(Level::Inactive)
                .request()
                .map_err(|e| {
                    format!(
                        "cannot request LED line {name} on {}: {e}",
                        line.chip.display()
                    )
                })?;
            leds.push((request, line.info.offset));
        }
        let mut chips: BTreeMap<PathBuf, BTreeMap<u32, usize>> = BTreeMap::new();
        for (index, name) in names.iter().enumerate() {
            let line = found
                .get(name)
                .ok_or_else(|| format!("no GPIO line named '{name}' (see `gpioinfo`)"))?;
            chips
                .entry(line.chip.clone())
                .or_default()
                .insert(line.info.offset, index);
        }
        let mut requests = Vec::new();
        for (chip, offsets) in chips {
            let list: Vec<u32> = offsets.keys().copied().collect();
            let mut builder = gpiocdev::Request::builder();
            builder
                .on_chip(chip.clone())
                .with_consumer("leitsystemd")
                .with_lines(&list)
                .as_input()
                .with_bias(settings.bias)
                .with_edge_detection(EdgeDetection::BothEdges);
            if !settings.debounce.is_zero() {
                builder.with_debounce_period(settings.debounce);
            }
            if settings.active_low {
                builder.as_active_low();
            }
            let request = builder
                .request()
                .map_err(|e| format!("cannot request lines {list:?} on {}: {e}", chip.display()))?;
            requests.push((request, offsets));
        }
        Ok(GpioLines { requests, leds })
    }
}

impl Lines for GpioLines {
    fn wait(&mut self, timeout: Duration) -> Result<Vec<Edge>, String> {
        let share = timeout / u32::try_from(self.requests.len().max(1)).unwrap_or(1);
        let mut edges = Vec::new();
        for (request, offsets) in &self.requests {
            let ready = request
                .wait_edge_event(share)
                .map_err(|e| format!("waiting for GPIO edges failed: {e}"))?;
            if !ready {
                continue;
            }
            while request.has_edge_event().map_err(|e| e.to_string())? {
                let event = request
                    .read_edge_event()
                    .map_err(|e| format!("reading a GPIO edge failed: {e}"))?;
                if let Some(&button) = offsets.get(&event.offset) {
                    edges.push(Edge {
                        button,
                        pressed: event.kind == EdgeKind::Rising,
                        at: Duration::from_nanos(event.timestamp_ns),
                    });
                }
            }
        }
        Ok(edges)
    }

    fn now(&self) -> Duration {
        monotonic_now()
    }

    fn set_led(&mut self, led: usize, on: bool) -> Result<(), String> {
        let (request, offset) = self.leds.get(led).ok_or_else(|| format!("no LED {led}"))?;
        let level = if on { Level::Active } else { Level::Inactive };
        request
            .set_value(*offset, level)
            .map(|_| ())
            .map_err(|e| format!("setting an LED line failed: {e}"))
    }
}

/// One button box.
pub struct GpioButtons {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    lights: Arc<Mutex<Vec<DeskLight>>>,
}

impl Driver for GpioButtons {
    fn create(config: DeviceConfig, host: Host) -> Result<Self, String> {
        if config.role != Role::Buttons {
            return Err(format!(
                "the gpio-buttons plugin drives buttons; device '{}' has role '{}'",
                config.id,
                config.role.as_str()
            ));
        }
        let settings = Settings::from_options(&config.options, &config.desks)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let lights = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&lights);
        let id = config.id.clone();
        let worker = host
            .spawn(&format!("buttons-{id}"), move || {
                serve(&settings, &id, host, &flag, &shared)
            })
            .map_err(|e| format!("cannot start the button thread: {e}"))?;
        Ok(GpioButtons {
            stop,
            worker: Some(worker),
            lights,
        })
    }

    fn handle(&mut self, message: HostMessage) -> Result<(), String> {
        match message {
            HostMessage::Desks { desks } => {
                *self.lights.lock().unwrap_or_else(|p| p.into_inner()) = desks;
                Ok(())
            }
            other => Err(format!(
                "buttons take no '{}' messages from the host",
                other.kind()
            )),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Drop for GpioButtons {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests the lines, runs the buttons and LEDs, and requests them again after a failure
/// (backoff).
fn serve(
    settings: &Settings,
    id: &str,
    host: Host,
    stop: &AtomicBool,
    lights: &Mutex<Vec<DeskLight>>,
) {
    let levels = || {
        let lights = lights.lock().unwrap_or_else(|p| p.into_inner());
        led_levels(settings, &lights, wall_now_ms())
    };
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let presses = AtomicU64::new(0);
    let mut backoff = Duration::from_millis(100);
    let mut reported: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let why = match GpioLines::request(settings) {
            Ok(mut lines) => {
                backoff = Duration::from_millis(100);
                reported = None;
                let names: Vec<&str> = settings
                    .buttons
                    .iter()
                    .map(|b| b.line.as_str())
                    .chain(settings.leds.iter().map(|l| l.line.as_str()))
                    .collect();
                host.emit(&PluginMessage::Connection {
                    connected: true,
                    detail: Some(format!("lines {} requested", names.join(", "))),
                });
                let mut report = |r: Report| match r {
                    Report::Press(desk, action) => {
                        let n = presses.fetch_add(1, Ordering::Relaxed) + 1;
                        host.emit(&PluginMessage::Button {
                            desk,
                            action,
                            event_id: format!("{id}-{boot}-{n}"),
                        });
                    }
                    Report::Stuck(line) => host.log(
                        LogLevel::Warn,
                        format!("button on {line} held too long: stuck? (ignored until released)"),
                    ),
                    Report::Released(line) => {
                        host.log(LogLevel::Info, format!("button on {line} released again"));
                    }
                };
                let why = run(&mut lines, settings, stop, &mut report, &levels);
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                why
            }
            Err(why) => why,
        };
        if reported.as_deref() != Some(why.as_str()) {
            host.log(LogLevel::Warn, format!("buttons: {why}"));
            host.emit(&PluginMessage::Connection {
                connected: false,
                detail: Some(why.clone()),
            });
            reported = Some(why);
        }
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(settings.reconnect_max);
    }
}

leitsystem_plugin::export_plugin!(
    GpioButtons,
    name: "gpio-buttons",
    version: env!("CARGO_PKG_VERSION"),
    roles: "buttons"
);
